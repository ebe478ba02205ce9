"""Inpainting gives diffusers' StableDiffusionInpaintPipeline image, with the LCM's 4-channel UNet
and LCMScheduler, for the same seed: the same mask processing, latents, draws and blend.

diffusers runs the tiny random LCM's PyTorch folder as a StableDiffusionInpaintPipeline (the
guidance embedding from ``time_cond_proj_dim``, as that pipeline computes it), lcm_lite its
OpenVINO export with the f32 hint. Each test checks that the diffusers reference itself changes
with the mask, so that a match is not a match of two images that ignore it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_img2img_parity import GUIDANCE, _assert_within_one_level, varied_picture

from lcm_lite.errors import UsageError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _inpaint_pipe(folder, **components):
    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False, **components
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inpaint_pipe(tiny_diffusers_dir):
    pipe = _inpaint_pipe(tiny_diffusers_dir)
    assert isinstance(pipe.scheduler, diffusers.LCMScheduler)
    assert pipe.unet.config.in_channels == 4 and pipe.unet.config.time_cond_proj_dim
    return pipe


def rectangle_mask(width: int, height: int, box: tuple[float, float, float, float]) -> Image.Image:
    """Black with a white rectangle, ``box`` in fractions of the size."""
    mask = Image.new("L", (width, height))
    left, top, right, bottom = box
    ImageDraw.Draw(mask).rectangle(
        (left * width, top * height, right * width - 1, bottom * height - 1), fill=255
    )
    return mask


def ellipse_mask(width: int, height: int) -> Image.Image:
    """A white ellipse, RGB: converted to grayscale as diffusers does."""
    mask = Image.new("RGB", (width, height))
    ImageDraw.Draw(mask).ellipse((width * 0.2, height * 0.3, width * 0.7, height * 0.9), "white")
    return mask


def gradient_mask(width: int, height: int) -> Image.Image:
    """Gray levels left to right: binarized at half gray."""
    row = np.linspace(0, 255, width)
    return Image.fromarray(np.tile(row, (height, 1)).astype(np.uint8))


def blob_mask(width: int, height: int, seed: int = 0) -> Image.Image:
    """Scattered blobs: smoothed noise thresholded."""
    noise = np.random.default_rng(seed).random((height // 8, width // 8))
    small = Image.fromarray((noise * 255).astype(np.uint8)).resize((width, height))
    return small.point(lambda value: 255 if value > 150 else 0)


MASKS = {
    "rectangle": lambda w, h: rectangle_mask(w, h, (0.25, 0.25, 0.75, 0.6)),
    "ellipse": ellipse_mask,
    "gradient": gradient_mask,
    "blobs": blob_mask,
    "twice as large": lambda w, h: rectangle_mask(2 * w, 2 * h, (0.5, 0.0, 1.0, 0.5)),
}


def _theirs(
    pipe, prompt, image, mask, *, strength, steps, seed, width, height, num_images=1, **extra
):
    """diffusers' images; ``extra``: its other arguments (``guidance_scale`` default GUIDANCE)."""
    images = pipe(
        prompt,
        image=image,
        mask_image=mask,
        strength=strength,
        num_inference_steps=steps,
        num_images_per_prompt=num_images,
        width=width,
        height=height,
        generator=torch.Generator().manual_seed(seed),
        **{"guidance_scale": GUIDANCE, **extra},
    ).images
    return [np.asarray(picture) for picture in images]


def _ours(pipe, prompt, image, mask, **arguments):
    """lcm_lite's images; ``arguments``: the call's others (``guidance_scale`` default GUIDANCE)."""
    result = pipe(prompt, image=image, mask_image=mask, **{"guidance_scale": GUIDANCE, **arguments})
    return [np.asarray(picture) for picture in result]


def _assert_differ(first, second):
    """Two references differ by more than the tolerance somewhere."""
    pairs = zip(first, second, strict=True)
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in pairs) > 8


@pytest.mark.parametrize("mask_kind", list(MASKS))
@pytest.mark.parametrize(("strength", "steps"), [(1.0, 1), (1.0, 4), (0.5, 4), (0.75, 4)])
def test_same_seed_gives_the_diffusers_inpainting_for_each_kind_of_mask(
    f32_pipe, inpaint_pipe, mask_kind, strength, steps
):
    picture = varied_picture(64, 48, seed=2)
    mask = MASKS[mask_kind](64, 48)
    arguments = {"strength": strength, "steps": steps, "seed": 31}

    theirs = _theirs(inpaint_pipe, "a lighthouse", picture, mask, width=64, height=48, **arguments)
    other = _theirs(
        inpaint_pipe,
        "a lighthouse",
        picture,
        rectangle_mask(64, 48, (0.0, 0.5, 0.5, 1.0)),
        width=64,
        height=48,
        **arguments,
    )
    ours = _ours(f32_pipe, "a lighthouse", picture, mask, **arguments)

    _assert_differ(theirs, other)
    _assert_within_one_level(ours, theirs)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_two_images_per_prompt_and_a_picture_not_a_multiple_of_8_match_diffusers(
    f32_pipe, inpaint_pipe, steps
):
    picture = varied_picture(100, 75, seed=3)  # made at 96x72, as lcm_lite rounds down
    mask = rectangle_mask(100, 75, (0.1, 0.2, 0.6, 0.9))
    arguments = {"strength": 1.0, "steps": steps, "seed": 5, "num_images": 2}

    ours = _ours(f32_pipe, "a red cube", picture, mask, **arguments)
    theirs = _theirs(inpaint_pipe, "a red cube", picture, mask, width=96, height=72, **arguments)

    assert ours[0].shape == (72, 96, 3)
    _assert_within_one_level(ours, theirs)
    assert not np.array_equal(ours[0], ours[1])


def test_outside_the_mask_the_latents_are_the_pictures_and_inside_they_are_new(previews_pipe):
    picture = varied_picture(64, 64, seed=4)
    mask = rectangle_mask(64, 64, (0.5, 0.0, 1.0, 1.0))  # the right half: latent columns 4..7
    last_latents = []

    def keep_last(info):
        if info.step == info.num_steps:
            last_latents.append(info.denoised.copy())

    for seed in (1, 2):  # the tiny VAE encodes without a draw: the same picture latents
        previews_pipe(
            "a tree",
            image=picture,
            mask_image=mask,
            strength=1.0,
            steps=2,
            seed=seed,
            vae="tiny",
            callback=keep_last,
        )
    first, second = last_latents

    np.testing.assert_array_equal(first[..., :4], second[..., :4])
    assert np.abs(first[..., 4:] - second[..., 4:]).mean() > 0.1


@pytest.fixture(scope="module")
def taesd_inpaint_pipe(tiny_diffusers_dir, tiny_taesd_dir):
    return _inpaint_pipe(
        tiny_diffusers_dir, vae=diffusers.AutoencoderTiny.from_pretrained(tiny_taesd_dir)
    )


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_with_the_tiny_vae_inpainting_matches_diffusers_with_autoencoder_tiny(
    previews_pipe, taesd_inpaint_pipe, strength
):
    picture = varied_picture(80, 56, seed=8)
    mask = ellipse_mask(80, 56)
    arguments = {"strength": strength, "steps": 4, "seed": 21, "num_images": 2}

    ours = _ours(previews_pipe, "a red cube", picture, mask, vae="tiny", **arguments)
    theirs = _theirs(
        taesd_inpaint_pipe, "a red cube", picture, mask, width=80, height=56, **arguments
    )
    other = _theirs(
        taesd_inpaint_pipe,
        "a red cube",
        picture,
        gradient_mask(80, 56),
        width=80,
        height=56,
        **arguments,
    )

    _assert_differ(theirs, other)
    _assert_within_one_level(ours, theirs)


def test_one_mask_per_picture_and_prompts_are_tiled_as_in_diffusers(f32_pipe, inpaint_pipe):
    prompts = ["a red cube", "a blue sphere"]
    pictures = [varied_picture(64, 48, seed=5), varied_picture(64, 48, seed=6)]
    masks = [MASKS["rectangle"](64, 48), MASKS["blobs"](64, 48)]
    arguments = {"strength": 0.75, "steps": 4, "seed": 8, "num_images": 2}

    ours = _ours(f32_pipe, prompts, pictures, masks, **arguments)

    _assert_within_one_level(
        ours, _theirs(inpaint_pipe, prompts, pictures, masks, width=64, height=48, **arguments)
    )


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (b"not a picture", "not a PNG, JPEG or WebP"),
        (Image.new("L", (64, 64), 255), "give a mask of the picture's shape"),
        (Image.new("L", (64, 48), 100), "the mask is empty"),
        ([Image.new("L", (64, 48), 255)] * 2, "2 masks for 1 pictures"),
    ],
)
def test_a_bad_mask_is_one_line_usage_error(f32_pipe, mask, message):
    with pytest.raises(UsageError, match=message) as refused:
        f32_pipe("a fox", image=varied_picture(64, 48), mask_image=mask, steps=2)
    assert "\n" not in str(refused.value)


def test_a_mask_without_a_picture_is_refused(f32_pipe):
    with pytest.raises(UsageError, match="mask_image needs image"):
        f32_pipe("a fox", mask_image=Image.new("L", (64, 48), 255))


def test_a_strength_that_leaves_no_step_is_refused(f32_pipe):
    mask = MASKS["rectangle"](64, 48)
    with pytest.raises(UsageError, match="int\\(steps x strength\\)"):
        f32_pipe("a fox", image=varied_picture(64, 48), mask_image=mask, steps=2, strength=0.4)


# -- a 9-channel inpainting UNet (plain Stable Diffusion) with an LCM-LoRA -----------------------


@pytest.fixture(scope="module")
def inpainting_model_dir(tmp_path_factory, clip_vocab_dir):
    """A tiny random StableDiffusionInpaintPipeline: its UNet takes 9 channels."""
    from conversion.random_model import build_random_sd

    out_dir = tmp_path_factory.mktemp("tiny-inpainting") / "diffusers"
    return build_random_sd(out_dir, size="tiny", vocab_dir=clip_vocab_dir, seed=0, inpaint=True)


@pytest.fixture(scope="module")
def inpainting_lcm_lora(inpainting_model_dir, tmp_path_factory):
    """A random LCM-LoRA shape for it: kohya keys, every UNet layer (conv_in's 9 channels too)."""
    from conversion.random_model import build_random_lora

    path = tmp_path_factory.mktemp("inpainting-lora") / "lcm-lora.safetensors"
    return build_random_lora(
        inpainting_model_dir, path, rank=8, alpha=8.0, text_encoder=False, seed=3
    )


@pytest.fixture(scope="module")
def inpainting_ov_dir(inpainting_model_dir, tmp_path_factory):
    from conversion.export import convert

    out_dir = tmp_path_factory.mktemp("tiny-inpainting-ov") / "openvino"
    return convert(inpainting_model_dir, out_dir, weights="fp32")


@pytest.fixture(scope="module")
def nine_channel_pipe(inpainting_ov_dir, inpainting_lcm_lora):
    from lcm_lite import LCMPipeline

    return LCMPipeline.from_pretrained(
        inpainting_ov_dir, precision="f32", loras=[(inpainting_lcm_lora, 1.0)]
    )


@pytest.fixture(scope="module")
def diffusers_nine_channel_pipe(inpainting_model_dir, inpainting_lcm_lora):
    """diffusers' LCM-LoRA recipe on the inpainting pipeline: LCMScheduler from its config, the
    LoRA by ``load_lora_weights``."""
    pipe = _inpaint_pipe(inpainting_model_dir)
    assert pipe.unet.config.in_channels == 9 and pipe.unet.config.time_cond_proj_dim is None
    pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(inpainting_lcm_lora))
    return pipe


@pytest.mark.parametrize(
    ("strength", "steps", "guidance", "negative_prompt"),
    [
        (1.0, 4, 1.0, None),
        (1.0, 2, 3.0, "blurry"),
        (0.75, 4, 3.0, "dark, low quality"),
        (0.5, 4, 2.0, None),
        (1.0, 1, 3.0, "blurry"),
    ],
)
def test_a_nine_channel_unet_with_an_lcm_lora_gives_the_diffusers_image(
    nine_channel_pipe, diffusers_nine_channel_pipe, strength, steps, guidance, negative_prompt
):
    picture = varied_picture(64, 48, seed=9)
    mask = MASKS["ellipse"](64, 48)
    arguments = {"strength": strength, "steps": steps, "seed": 13, "num_images": 2}
    guided = {"negative_prompt": negative_prompt} if negative_prompt else {}

    def theirs(mask):
        return _theirs(
            diffusers_nine_channel_pipe,
            "a red cube",
            picture,
            mask,
            width=64,
            height=48,
            guidance_scale=guidance,
            **guided,
            **arguments,
        )

    reference = theirs(mask)
    ours = _ours(
        nine_channel_pipe,
        "a red cube",
        picture,
        mask,
        guidance_scale=guidance,
        **guided,
        **arguments,
    )

    _assert_differ(reference, theirs(MASKS["blobs"](64, 48)))
    _assert_within_one_level(ours, reference)


def test_a_nine_channel_model_without_a_mask_says_what_to_give(nine_channel_pipe):
    with pytest.raises(UsageError, match="an inpainting model .* give a picture and a mask"):
        nine_channel_pipe("a red cube", steps=2)
    with pytest.raises(UsageError, match="give a picture and a mask"):
        nine_channel_pipe("a red cube", image=varied_picture(64, 48), steps=2)


def test_the_converted_inpainting_folder_says_what_it_is(inpainting_ov_dir):
    from lcm_lite.models.folder import ModelFolder

    model_index = json.loads((inpainting_ov_dir / "model_index.json").read_text())
    folder = ModelFolder.open(inpainting_ov_dir)

    assert model_index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert (folder.unet_channels, folder.latent_channels, folder.is_inpainting) == (9, 4, True)
    assert (inpainting_ov_dir / "vae_encoder" / "openvino_model.xml").is_file()


# -- mask blur and padding_mask_crop -------------------------------------------------------------


def lines_mask(width: int, height: int) -> Image.Image:
    """A rectangle and thin lines: a blur rounds the one and wipes out the others."""
    mask = rectangle_mask(width, height, (0.15, 0.2, 0.55, 0.7))
    draw = ImageDraw.Draw(mask)
    for x in range(width // 2, width, 6):
        draw.line((x, 0, x, height), fill=255, width=2)
    return mask


@pytest.mark.parametrize("radius", [2, 5])
def test_mask_blur_is_diffusers_blur_of_the_mask(f32_pipe, inpaint_pipe, radius):
    picture, mask = varied_picture(64, 48, seed=10), lines_mask(64, 48)
    arguments = {"strength": 1.0, "steps": 2, "seed": 3}

    blurred = inpaint_pipe.mask_processor.blur(mask, blur_factor=radius)
    theirs = _theirs(inpaint_pipe, "a fox", picture, blurred, width=64, height=48, **arguments)
    unblurred = _theirs(inpaint_pipe, "a fox", picture, mask, width=64, height=48, **arguments)
    ours = _ours(f32_pipe, "a fox", picture, mask, mask_blur=radius, **arguments)

    _assert_differ(theirs, unblurred)
    _assert_within_one_level(ours, theirs)


@pytest.mark.parametrize(
    ("size", "box", "pad"),
    [
        ((48, 32), (0.3, 0.4, 0.45, 0.55), 4),  # grown to 3:2 about a small box
        ((32, 32), (0.7, 0.6, 0.95, 0.98), 8),  # at the corner: shifted back inside
        ((32, 48), (0.05, 0.1, 0.6, 0.3), 0),  # a wide box made tall
    ],
)
def test_padding_mask_crop_makes_the_masks_box_and_pastes_it_back_as_diffusers(
    f32_pipe, inpaint_pipe, size, box, pad
):
    width, height = size
    picture = varied_picture(120, 90, seed=11)
    mask = rectangle_mask(120, 90, box)
    arguments = {"strength": 1.0, "steps": 2, "seed": 17, "num_images": 2}

    def theirs(mask):
        return _theirs(
            inpaint_pipe,
            "a fox",
            picture,
            mask,
            width=width,
            height=height,
            padding_mask_crop=pad,
            **arguments,
        )

    reference = theirs(mask)
    ours = _ours(
        f32_pipe,
        "a fox",
        picture,
        mask,
        padding_mask_crop=pad,
        width=width,
        height=height,
        **arguments,
    )

    assert ours[0].shape == (90, 120, 3)
    _assert_differ(reference, theirs(rectangle_mask(120, 90, (0.0, 0.0, 0.3, 0.3))))
    _assert_within_one_level(ours, reference)
    outside = np.asarray(mask) == 0  # the picture itself where the mask is black
    assert np.array_equal(ours[0][outside], np.asarray(picture)[outside])


def test_padding_mask_crop_needs_a_mask_of_the_pictures_size(f32_pipe):
    with pytest.raises(UsageError, match="the mask must have the picture's size, 120x90"):
        f32_pipe(
            "a fox",
            image=varied_picture(120, 90),
            mask_image=rectangle_mask(60, 45, (0.2, 0.2, 0.5, 0.5)),
            padding_mask_crop=4,
            width=32,
            height=32,
        )


# -- with ControlNets: diffusers' StableDiffusionControlNetInpaintPipeline -----------------------


def _controlnet_inpaint_pipe(folder, controlnet_dir):
    from test_controlnet_parity import _load

    return _load(diffusers.StableDiffusionControlNetInpaintPipeline, folder, [controlnet_dir])


def _assert_steered_as_diffusers(
    reference, pipe, prompt, picture, mask, controls, reference_only: dict, arguments: dict
) -> None:
    """lcm_lite's images with the first control picture are diffusers' within a level, and
    diffusers' change at scale 0 and with the second control picture (the ControlNet steers).
    ``reference_only``: what only diffusers is given (its size, an LCM's guidance 1)."""

    def theirs(control, scale=1.0):
        return _theirs(
            reference,
            prompt,
            picture,
            mask,
            control_image=control,
            controlnet_conditioning_scale=scale,
            **{**reference_only, **arguments},
        )

    reference_images = theirs(controls[0])
    ours = _ours(pipe, prompt, picture, mask, control_image=controls[0], **arguments)

    _assert_differ(reference_images, theirs(controls[0], scale=0.0))
    _assert_differ(reference_images, theirs(controls[1]))
    _assert_within_one_level(ours, reference_images)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strength", "steps", "crop"), [(1.0, 4, None), (0.75, 4, None), (1.0, 2, 4)]
)
def test_an_lcm_with_a_controlnet_inpaints_as_diffusers_controlnet_inpaint_pipeline(
    controlnet_pipe, tiny_diffusers_dir, tiny_controlnet, strength, steps, crop
):
    """The ControlNet takes the latents, the area to keep is put back after each step, and with
    ``padding_mask_crop`` the control picture is cut as the picture. That pipeline gives an LCM's
    UNet no guidance embedding: its reference runs at guidance 1 with the embedding handed over
    (``with_guidance_embedding``), lcm_lite at GUIDANCE as its other LCM pipelines."""
    from test_controlnet_parity import control_picture, with_guidance_embedding

    reference = with_guidance_embedding(
        _controlnet_inpaint_pipe(tiny_diffusers_dir, tiny_controlnet[0]), GUIDANCE
    )
    picture, mask = varied_picture(64, 48, seed=14), MASKS["ellipse"](64, 48)
    size = {"width": 32, "height": 32, "padding_mask_crop": crop} if crop else {}
    arguments = {"strength": strength, "steps": steps, "seed": 23, "num_images": 2, **size}

    _assert_steered_as_diffusers(
        reference,
        controlnet_pipe,
        "a lighthouse",
        picture,
        mask,
        [control_picture(64, 48, seed=15), control_picture(64, 48, seed=16)],
        {"guidance_scale": 1.0, "width": 64, "height": 48},
        arguments,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strength", "guess_mode", "negative_prompt"),
    [(1.0, False, "blurry"), (0.75, False, None), (1.0, True, "dark")],
)
def test_a_nine_channel_unet_with_an_lcm_lora_and_a_controlnet_gives_the_diffusers_image(
    inpainting_ov_dir,
    inpainting_model_dir,
    inpainting_lcm_lora,
    tiny_sd_controlnet,
    strength,
    guess_mode,
    negative_prompt,
):
    """An SD 1.5 ControlNet (4 input channels) on the inpainting model: it takes the latents, the
    UNet the latents, the mask and the masked pictures' latents, under classifier-free
    guidance."""
    from test_controlnet_parity import control_picture

    from lcm_lite import LCMPipeline

    reference = _controlnet_inpaint_pipe(inpainting_model_dir, tiny_sd_controlnet[0])
    reference.scheduler = diffusers.LCMScheduler.from_config(reference.scheduler.config)
    reference.load_lora_weights(str(inpainting_lcm_lora))
    pipe = LCMPipeline.from_pretrained(
        inpainting_ov_dir,
        precision="f32",
        loras=[(inpainting_lcm_lora, 1.0)],
        controlnet=tiny_sd_controlnet[1],
    )
    picture, mask = varied_picture(64, 48, seed=17), MASKS["rectangle"](64, 48)
    guided = {"negative_prompt": negative_prompt} if negative_prompt else {}
    arguments = {
        "strength": strength,
        "steps": 4,
        "seed": 29,
        "num_images": 2,
        "guidance_scale": 2.5,
        "guess_mode": guess_mode,
        **guided,
    }

    _assert_steered_as_diffusers(
        reference,
        pipe,
        "a red cube",
        picture,
        mask,
        [control_picture(64, 48, seed=18), control_picture(64, 48, seed=19)],
        {"width": 64, "height": 48},
        arguments,
    )


def test_a_random_controlnet_for_the_inpainting_model_takes_the_latents_alone(
    inpainting_model_dir, inpainting_ov_dir, tmp_path
):
    from conversion.export import convert
    from conversion.random_model import build_random_controlnet
    from lcm_lite.models.controlnet import ControlNetFolder
    from lcm_lite.models.folder import ModelFolder

    source = build_random_controlnet(inpainting_model_dir, tmp_path / "diffusers", seed=4)
    folder = ControlNetFolder.open(convert(source, tmp_path / "openvino", weights="fp32"))

    assert diffusers.ControlNetModel.from_pretrained(source).config.in_channels == 4
    folder.check_base(ModelFolder.open(inpainting_ov_dir))  # not refused
