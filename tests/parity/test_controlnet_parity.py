"""ControlNet gives diffusers' ``StableDiffusionControlNetPipeline`` image (and its img2img twin's).

diffusers runs the tiny random LCM (or the plain SD model with the LCM-LoRA) with the tiny random
ControlNets, whose "zero convolutions" are random (a fresh ControlNet adds nothing); lcm_lite runs
their conversions with the f32 hint. Each comparison first checks that the reference itself moves
with what is tested (the control picture, the scale, the second ControlNet), beyond the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lcm_lite import LCMPipeline

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

GUIDANCE = 8.0
MOVED = 3  # levels: the reference moves by more than this, the tolerance is 1


def control_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Blocks of random colours: an edge map's hard contours, in colour."""
    blocks = np.random.default_rng(seed).integers(0, 256, (height // 8 + 1, width // 8 + 1, 3))
    pixels = np.kron(blocks, np.ones((8, 8, 1)))[:height, :width]
    return Image.fromarray(pixels.astype(np.uint8))


def _load(pipeline_class, model_dir, controlnets, **components):
    nets = [diffusers.ControlNetModel.from_pretrained(path) for path in controlnets]
    pipe = pipeline_class.from_pretrained(
        model_dir,
        controlnet=nets[0] if len(nets) == 1 else nets,
        safety_checker=None,
        requires_safety_checker=False,
        **components,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def reference(tiny_diffusers_dir, tiny_controlnet):
    return _load(
        diffusers.StableDiffusionControlNetPipeline, tiny_diffusers_dir, [tiny_controlnet[0]]
    )


def with_guidance_embedding(pipe, guidance_scale: float):
    """``pipe`` (a ControlNet pipeline, which gives an LCM's UNet no guidance embedding) with the
    embedding of ``guidance_scale`` handed to its UNet, as diffusers' LCM pipelines compute it;
    run it at guidance 1 (no classifier-free guidance)."""
    embedding = diffusers.StableDiffusionControlNetPipeline.get_guidance_scale_embedding(
        pipe, torch.tensor([guidance_scale - 1]), embedding_dim=pipe.unet.config.time_cond_proj_dim
    )

    def hand_over(module, args, kwargs):
        return args, {**kwargs, "timestep_cond": embedding.expand(args[0].shape[0], -1)}

    pipe.unet.register_forward_pre_hook(hand_over, with_kwargs=True)
    return pipe


def _theirs(pipe, prompt, control, *, seed=3, steps=4, **kwargs):
    images = pipe(
        prompt,
        image=control,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        **{"guidance_scale": GUIDANCE, **kwargs},
    ).images
    return np.stack([np.asarray(image) for image in images]).astype(int)


def _ours(pipe, prompt, control, *, seed=3, steps=4, **kwargs):
    result = pipe(
        prompt,
        control_image=control,
        steps=steps,
        seed=seed,
        **{"guidance_scale": GUIDANCE, **kwargs},
    )
    return np.stack([np.asarray(image) for image in result]).astype(int)


def _assert_within_one_level(ours, theirs):
    assert ours.shape == theirs.shape
    assert ours.std() > 10, "a flat image proves nothing"
    assert np.abs(ours - theirs).max() <= 1


def _moved(a, b) -> float:
    return float(np.abs(a - b).max())


@pytest.mark.parametrize(
    ("scale", "start", "end"),
    [(1.0, 0.0, 1.0), (0.5, 0.0, 1.0), (1.5, 0.25, 0.75), (1.0, 0.5, 1.0), (0.8, 0.0, 0.3)],
)
def test_one_controlnet_at_a_scale_and_guidance_window_gives_the_diffusers_image(
    controlnet_pipe, reference, scale, start, end
):
    control = control_picture(64, 64)
    window = {"control_guidance_start": start, "control_guidance_end": end}
    arguments = {"width": 64, "height": 64, "controlnet_conditioning_scale": scale, **window}

    theirs = _theirs(reference, "a lighthouse", control, **arguments)

    unsteered = _theirs(
        reference, "a lighthouse", control, **{**arguments, "controlnet_conditioning_scale": 0.0}
    )
    assert _moved(theirs, unsteered) > MOVED, "the ControlNet does not move the reference"
    _assert_within_one_level(_ours(controlnet_pipe, "a lighthouse", control, **arguments), theirs)


def test_another_control_picture_gives_another_image_as_in_diffusers(controlnet_pipe, reference):
    arguments = {"width": 64, "height": 64}
    pictures = [control_picture(64, 64), control_picture(64, 64, seed=9)]

    theirs = [_theirs(reference, "a lighthouse", picture, **arguments) for picture in pictures]

    assert _moved(*theirs) > MOVED, "the control picture does not move the reference"
    for picture, their_image in zip(pictures, theirs, strict=True):
        ours = _ours(controlnet_pipe, "a lighthouse", picture, **arguments)
        _assert_within_one_level(ours, their_image)


def test_a_control_picture_of_another_size_is_resized_to_the_image_as_in_diffusers(
    controlnet_pipe, reference
):
    control = control_picture(100, 70, seed=4)
    arguments = {"width": 80, "height": 48, "num_images": 2}
    theirs = _theirs(reference, "a fox", control, width=80, height=48, num_images_per_prompt=2)

    ours = _ours(controlnet_pipe, "a fox", control, **arguments)

    _assert_within_one_level(ours, theirs)
    assert ours.shape == (2, 48, 80, 3)


def test_without_a_size_the_image_takes_the_control_pictures_size_rounded_down_to_8(
    controlnet_pipe, reference
):
    control = control_picture(75, 61, seed=5)

    ours = _ours(controlnet_pipe, ["a red cube", "a blue sphere"], control, steps=2)

    assert ours.shape == (2, 56, 72, 3)
    _assert_within_one_level(
        ours, _theirs(reference, ["a red cube", "a blue sphere"], control, steps=2)
    )


def test_with_the_tiny_vae_the_controlled_image_is_decoded_by_taesd_as_in_diffusers(
    controlnet_pipe, tiny_diffusers_dir, tiny_controlnet, tiny_taesd_dir
):
    taesd = diffusers.AutoencoderTiny.from_pretrained(tiny_taesd_dir)
    pipe = _load(
        diffusers.StableDiffusionControlNetPipeline,
        tiny_diffusers_dir,
        [tiny_controlnet[0]],
        vae=taesd,
    )
    control = control_picture(64, 64, seed=6)
    arguments = {"width": 64, "height": 64}

    ours = _ours(controlnet_pipe, "a tree", control, vae="tiny", **arguments)

    _assert_within_one_level(ours, _theirs(pipe, "a tree", control, **arguments))


def test_two_controlnets_add_their_residuals_each_at_its_scale_as_multicontrolnet(
    tiny_diffusers_dir, tiny_ov_dir, tiny_controlnet, second_tiny_controlnet
):
    controlnets = [tiny_controlnet, second_tiny_controlnet]
    theirs_pipe = _load(
        diffusers.StableDiffusionControlNetPipeline,
        tiny_diffusers_dir,
        [source for source, _ in controlnets],
    )
    ours_pipe = LCMPipeline.from_pretrained(
        tiny_ov_dir,
        precision="f32",
        controlnet=[(tiny_controlnet[1], 0.7), second_tiny_controlnet[1]],
    )
    controls = [control_picture(64, 64, seed=7), control_picture(64, 64, seed=8)]
    arguments = {"width": 64, "height": 64, "control_guidance_end": 0.8}

    theirs = _theirs(
        theirs_pipe, "a house", controls, controlnet_conditioning_scale=[0.7, 1.0], **arguments
    )
    first_only = _theirs(
        theirs_pipe, "a house", controls, controlnet_conditioning_scale=[0.7, 0.0], **arguments
    )

    assert _moved(theirs, first_only) > MOVED, "the second ControlNet does not move the reference"
    result = ours_pipe(
        "a house", control_image=controls, steps=4, seed=3, guidance_scale=GUIDANCE, **arguments
    )
    _assert_within_one_level(np.asarray(result[0]).astype(int)[None], theirs)
    assert result.settings.controlnets == (
        (str(tiny_controlnet[1]), 0.7),
        (str(second_tiny_controlnet[1]), 1.0),
    )


@pytest.fixture(scope="module")
def sd_lcm_lora_reference(tiny_sd_diffusers_dir, tiny_sd_controlnet, lcm_lora):
    """diffusers' LCM-LoRA recipe with a ControlNet: StableDiffusionControlNetPipeline,
    LCMScheduler from its config, the LCM-LoRA loaded."""
    pipe = _load(
        diffusers.StableDiffusionControlNetPipeline, tiny_sd_diffusers_dir, [tiny_sd_controlnet[0]]
    )
    pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lcm_lora))
    return pipe


@pytest.mark.parametrize("guess_mode", [False, True])
def test_plain_sd_with_lcm_lora_under_guidance_and_a_negative_prompt_gives_the_diffusers_image(
    tiny_sd_ov_dir, lcm_lora, tiny_sd_controlnet, sd_lcm_lora_reference, guess_mode
):
    pipe = LCMPipeline.from_pretrained(
        tiny_sd_ov_dir, precision="f32", loras=[(lcm_lora, 1.0)], controlnet=tiny_sd_controlnet[1]
    )
    control = control_picture(64, 64, seed=10)
    arguments = {
        "width": 64,
        "height": 64,
        "guidance_scale": 2.0,
        "negative_prompt": "blurry",
        "guess_mode": guess_mode,
    }

    theirs = _theirs(sd_lcm_lora_reference, "a castle", control, **arguments)
    unsteered = _theirs(
        sd_lcm_lora_reference, "a castle", control, controlnet_conditioning_scale=0.0, **arguments
    )

    assert _moved(theirs, unsteered) > MOVED, "the ControlNet does not move the reference"
    _assert_within_one_level(_ours(pipe, "a castle", control, **arguments), theirs)


def _img2img_reference(model_dir, controlnet_dir, **components):
    return _load(
        diffusers.StableDiffusionControlNetImg2ImgPipeline,
        model_dir,
        [controlnet_dir],
        **components,
    )


def _img2img_images(pipe, picture, control, *, ours: bool, **kwargs):
    """4 steps at strength 0.5 in diffusers' StableDiffusionControlNetImg2ImgPipeline (the
    last 2 of the 4-step schedule) are lcm_lite's 2 steps at strength 0.5 (as
    LatentConsistencyModelImg2ImgPipeline: the last int(50 * 0.5) distillation timesteps). The
    scale is given: that pipeline's default is 0.8, lcm_lite's 1."""
    if ours:
        result = pipe(
            "a boat", image=picture, control_image=control, strength=0.5, steps=2, seed=13, **kwargs
        )
        assert result.settings.timesteps == (499, 259)
        return np.asarray(result[0]).astype(int)
    images = pipe(
        "a boat",
        image=picture,
        control_image=control,
        strength=0.5,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(13),
        controlnet_conditioning_scale=1.0,
        **kwargs,
    ).images
    return np.asarray(images[0]).astype(int)


def test_image_to_image_with_a_controlnet_on_sd_with_lcm_lora_gives_the_diffusers_image(
    tiny_sd_ov_dir, tiny_sd_diffusers_dir, tiny_sd_controlnet, lcm_lora
):
    reference = _img2img_reference(tiny_sd_diffusers_dir, tiny_sd_controlnet[0])
    reference.scheduler = diffusers.LCMScheduler.from_config(reference.scheduler.config)
    reference.load_lora_weights(str(lcm_lora))
    pipe = LCMPipeline.from_pretrained(
        tiny_sd_ov_dir, precision="f32", loras=[(lcm_lora, 1.0)], controlnet=tiny_sd_controlnet[1]
    )
    picture = control_picture(64, 64, seed=11).rotate(90)
    control = control_picture(64, 64, seed=12)
    arguments = {"guidance_scale": 1.5, "negative_prompt": "fog"}

    theirs = _img2img_images(reference, picture, control, ours=False, **arguments)
    other_control = _img2img_images(
        reference, picture, control_picture(64, 64, seed=14), ours=False, **arguments
    )

    assert _moved(theirs, other_control) > MOVED, "the control picture does not move it"
    _assert_within_one_level(
        _img2img_images(pipe, picture, control, ours=True, **arguments)[None], theirs[None]
    )


def test_image_to_image_with_a_controlnet_on_an_lcm_keeps_the_guidance_embedding(
    controlnet_pipe, tiny_diffusers_dir, tiny_controlnet
):
    """diffusers' StableDiffusionControlNetImg2ImgPipeline gives an LCM's UNet no guidance
    embedding and runs classifier-free guidance above 1 (its txt2img twin and
    LatentConsistencyModelImg2ImgPipeline do neither): lcm_lite runs the LCM as those, so the
    reference here is that pipeline at guidance 1 with the embedding of 8 handed to its UNet."""
    reference = with_guidance_embedding(
        _img2img_reference(tiny_diffusers_dir, tiny_controlnet[0]), GUIDANCE
    )
    picture = control_picture(64, 64, seed=11).rotate(90)
    control = control_picture(64, 64, seed=12)

    theirs = _img2img_images(reference, picture, control, ours=False, guidance_scale=1.0)

    _assert_within_one_level(
        _img2img_images(controlnet_pipe, picture, control, ours=True, guidance_scale=GUIDANCE)[
            None
        ],
        theirs[None],
    )


def test_the_unet_with_residual_inputs_is_the_plain_unet_at_zero_and_diffusers_with_residuals(
    tiny_diffusers_dir, tiny_ov_dir, tiny_controlnet
):
    from lcm_lite.models.controlnet import ControlNet, ControlNetFolder
    from lcm_lite.models.folder import ModelFolder
    from lcm_lite.models.lora_branches import Branches
    from lcm_lite.models.networks import UNet
    from lcm_lite.runtime.compiler import Compiler

    folder, compiler = ModelFolder.open(tiny_ov_dir), Compiler(precision="f32")
    shape = (2, 4, 9, 11)  # odd sides: every skip connection's size differs from its neighbour's
    rng = np.random.default_rng(0)
    sample = rng.standard_normal(shape, dtype=np.float32)
    text = rng.standard_normal((2, 77, 32), dtype=np.float32)
    guidance = rng.standard_normal((2, 32), dtype=np.float32)
    controlnet = ControlNet(compiler, ControlNetFolder.open(tiny_controlnet[1]), shape, 77)
    residuals = [rng.standard_normal(s, dtype=np.float32) for s in controlnet.residual_shapes]

    plain = UNet(compiler, folder, shape, 77, Branches())(sample, 499, text, guidance).copy()
    with_inputs = UNet(compiler, folder, shape, 77, Branches(), controlnet.residual_shapes)
    at_zero = with_inputs(sample, 499, text, guidance, [np.zeros_like(r) for r in residuals]).copy()
    ours = with_inputs(sample, 499, text, guidance, residuals).copy()

    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_diffusers_dir, subfolder="unet")
    with torch.no_grad():
        theirs = unet(
            torch.from_numpy(sample),
            499,
            torch.from_numpy(text),
            timestep_cond=torch.from_numpy(guidance),
            down_block_additional_residuals=[torch.from_numpy(r) for r in residuals[:-1]],
            mid_block_additional_residual=torch.from_numpy(residuals[-1]),
        ).sample.numpy()
    assert np.array_equal(at_zero, plain)
    assert np.abs(theirs - plain).max() > 0.1, "the residuals do not move diffusers' UNet"
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()


def test_the_converted_controlnet_gives_diffusers_residuals(tiny_controlnet):
    from lcm_lite.models.controlnet import ControlNet, ControlNetFolder
    from lcm_lite.runtime.compiler import Compiler

    shape = (1, 4, 8, 10)
    rng = np.random.default_rng(1)
    sample = rng.standard_normal(shape, dtype=np.float32)
    text = rng.standard_normal((1, 77, 32), dtype=np.float32)
    condition = rng.random((1, 3, 64, 80), dtype=np.float32)
    ours = ControlNet(
        Compiler(precision="f32"), ControlNetFolder.open(tiny_controlnet[1]), shape, 77
    )(sample, 259, text, condition)
    model = diffusers.ControlNetModel.from_pretrained(tiny_controlnet[0])
    with torch.no_grad():
        down, mid = model(
            torch.from_numpy(sample),
            259,
            torch.from_numpy(text),
            torch.from_numpy(condition),
            return_dict=False,
        )
    theirs = [t.numpy() for t in (*down, mid)]
    assert len(ours) == len(theirs) == 5  # conv_in, 2 resnets, a downsampler; the mid block
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(b).max() > 0.1  # non-zero "zero convolutions"
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
