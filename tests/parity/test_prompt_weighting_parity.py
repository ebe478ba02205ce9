"""Weighted and long prompts, and clip_skip, give the numbers of diffusers' community
long-prompt-weighting pipeline (``get_weighted_text_embeddings``) and the image diffusers makes
when fed them.

The reference file is not in the diffusers wheel and CI cannot fetch it: what the real file
produced is stored in tests/data (``make_lpw_reference.py`` regenerates it and names the diffusers
commit), on the tiny random LCM built here the same way (synthetic CLIP vocabulary, seed 0; the
guard test checks it is the same text encoder). The images are diffusers' pipelines fed those
stored ``prompt_embeds``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from lcm_lite import LCMPipeline  # noqa: E402

DATA = Path(__file__).parent.parent / "data"
REFERENCE = json.loads((DATA / "lpw_reference.json").read_text())
EMBEDS = dict(np.load(DATA / "lpw_reference.npz"))
CASES = {case["name"]: case for case in REFERENCE["cases"]}
ENCODE_CASES = [name for name, case in CASES.items() if case["weighting"]]
SIZE = {"width": 64, "height": 64, "guidance_scale": 8.0}
EMBEDDING_TOLERANCE = 1e-5  # float32, OpenVINO against torch
LATENT_TOLERANCE = 1e-5  # relative; measured 3e-7


@pytest.fixture(scope="session")
def lpw_models(tmp_path_factory):
    """The tiny LCM and plain SD of make_lpw_reference.py (synthetic vocabulary, seed 0, whatever
    ../shared holds), as diffusers folders and OpenVINO exports, and an LCM-LoRA for the SD."""
    from conversion.clip_vocab import write_synthetic_clip_vocab
    from conversion.export import convert
    from conversion.random_model import build_random_lcm, build_random_lora, build_random_sd

    root = tmp_path_factory.mktemp("lpw")
    vocab = write_synthetic_clip_vocab(root / "vocab")
    lcm = build_random_lcm(root / "lcm", size="tiny", vocab_dir=vocab, seed=0)
    sd = build_random_sd(root / "sd", size="tiny", vocab_dir=vocab, seed=0)
    lora = build_random_lora(
        sd, root / "lcm-lora.safetensors", rank=8, alpha=8.0, text_encoder=False, seed=3
    )
    return SimpleNamespace(
        lcm=lcm,
        sd=sd,
        lora=lora,
        lcm_ov=convert(lcm, root / "lcm-ov", weights="fp32"),
        sd_ov=convert(sd, root / "sd-ov", weights="fp32"),
    )


@pytest.fixture(scope="session")
def ours(lpw_models):
    return LCMPipeline.from_pretrained(lpw_models.lcm_ov, precision="f32")


@pytest.fixture(scope="session")
def ours_sd(lpw_models):
    return LCMPipeline.from_pretrained(
        lpw_models.sd_ov, precision="f32", loras=[(lpw_models.lora, 1.0)]
    )


def _with_final_layer_norm(pipe):
    """diffusers 0.42 reaches the final LayerNorm (for clip_skip) as
    ``text_encoder.text_model.final_layer_norm``, which transformers 5's CLIPTextModel lacks."""
    encoder = pipe.text_encoder
    encoder.text_model = SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def theirs(lpw_models):
    return _with_final_layer_norm(
        diffusers.LatentConsistencyModelPipeline.from_pretrained(lpw_models.lcm)
    )


@pytest.fixture(scope="session")
def theirs_sd(lpw_models):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(lpw_models.sd, safety_checker=None)
    pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lpw_models.lora), adapter_name="lcm")
    pipe.set_adapters(["lcm"], adapter_weights=[1.0])
    return _with_final_layer_norm(pipe)


def _images(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image in result]).astype(int)


def _diffusers_run(pipe, seed=5, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' images and its last ``denoised`` latents."""
    denoised = []

    def keep_denoised(pipe, step, timestep, tensors):
        denoised.append(tensors["denoised"].numpy().copy())
        return {}

    images = pipe(
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        callback_on_step_end=keep_denoised,
        callback_on_step_end_tensor_inputs=["denoised"],
        **SIZE,
        **_torch(kwargs),
    ).images
    return _images(images), denoised[-1]


def _diffusers_images(pipe, seed=5, **kwargs) -> np.ndarray:
    """diffusers' images (StableDiffusionPipeline has no ``denoised`` to show)."""
    generator = torch.Generator().manual_seed(seed)
    return _images(
        pipe(num_inference_steps=2, generator=generator, **SIZE, **_torch(kwargs)).images
    )


def _torch(kwargs: dict) -> dict:
    """NumPy arrays (the stored embeddings) as torch tensors."""
    return {
        key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        for key, value in kwargs.items()
    }


def _relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def test_the_text_encoder_built_here_is_the_one_the_reference_ran(theirs, ours):
    with torch.no_grad():
        plain, _ = theirs.encode_prompt(REFERENCE["guard_prompt"], "cpu", 1, False)
    assert np.abs(plain.numpy() - EMBEDS["guard"]).max() < EMBEDDING_TOLERANCE, (
        "torch built another random model: run tests/data/make_lpw_reference.py again"
    )
    mine, negative = ours.encode_prompt(REFERENCE["guard_prompt"])
    assert negative is None
    assert np.abs(mine - EMBEDS["guard"]).max() < EMBEDDING_TOLERANCE


def test_the_reference_varies_with_the_weights():
    weighted, unweighted = EMBEDS["weighted.prompt_embeds"], EMBEDS["unweighted.prompt_embeds"]
    assert abs(unweighted.mean()) > 0.1, "a zero mean would make the rescale degenerate"
    assert np.abs(weighted - unweighted).max() > 100 * EMBEDDING_TOLERANCE
    assert np.abs(weighted - unweighted).mean() > 0.01


@pytest.mark.parametrize("name", [n for n in ENCODE_CASES if n != "guided"])
def test_encode_prompt_gives_the_reference_tokens_weights_and_embeddings(ours, name):
    case = CASES[name]
    tokens, _ = ours.prompt_encoder.tokenize(case["prompt"], None, weighting=True)
    assert tokens.input_ids.tolist() == case["prompt_chunks"]
    assert np.array_equal(tokens.weights, np.float32(case["prompt_weights"]))
    embeds, negative = ours.encode_prompt(
        case["prompt"], prompt_weighting=True, clip_skip=case["clip_skip"]
    )
    assert negative is None
    reference = EMBEDS[f"{name}.prompt_embeds"]
    assert embeds.shape == reference.shape
    assert np.abs(embeds - reference).max() < EMBEDDING_TOLERANCE


def test_prompt_and_negative_prompt_of_other_lengths_share_the_chunk_count(ours_sd):
    case = CASES["guided"]
    tokens, negative_tokens = ours_sd.prompt_encoder.tokenize(
        case["prompt"], case["negative_prompt"], weighting=True
    )
    assert tokens.input_ids.tolist() == case["prompt_chunks"]
    assert negative_tokens.input_ids.tolist() == case["negative_chunks"]
    embeds, negative = ours_sd.encode_prompt(
        case["prompt"], case["negative_prompt"], prompt_weighting=True
    )
    assert np.abs(embeds - EMBEDS["guided.prompt_embeds"]).max() < EMBEDDING_TOLERANCE
    assert np.abs(negative - EMBEDS["guided.negative_prompt_embeds"]).max() < EMBEDDING_TOLERANCE


@pytest.mark.parametrize(
    "name",
    ["weighted", "escaped", "unbalanced", "two_chunks", "past_three_chunks", "batch", "clip_skip"],
)
def test_the_image_is_diffusers_fed_the_reference_embeddings(ours, theirs, name):
    case = CASES[name]
    reference, reference_denoised = _diffusers_run(
        theirs, prompt_embeds=EMBEDS[f"{name}.prompt_embeds"]
    )
    denoised = []
    result = ours(
        case["prompt"],
        prompt_weighting=True,
        clip_skip=case["clip_skip"],
        steps=2,
        seed=5,
        callback=lambda info: denoised.append(info.denoised.copy()),
        **SIZE,
    )
    assert _relative_difference(denoised[-1], reference_denoised) < LATENT_TOLERANCE
    assert np.abs(_images(result) - reference).max() <= 1
    assert result.metadata(0, "m")["prompt_weighting"] is True


def test_the_denoised_latents_move_with_the_weights_far_beyond_the_tolerance(theirs):
    """The tiny UNet's cross-attention moves the 8-bit image by a level only: its latents show
    that the weights count, beyond the tolerance of the test above (measured: 4e-4)."""
    _, weighted = _diffusers_run(theirs, prompt_embeds=EMBEDS["weighted.prompt_embeds"])
    _, unweighted = _diffusers_run(theirs, prompt_embeds=EMBEDS["unweighted.prompt_embeds"])
    assert _relative_difference(weighted, unweighted) > 10 * LATENT_TOLERANCE


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip_without_weighting_is_diffusers_own(ours, theirs, clip_skip):
    prompt = "a lighthouse at dusk, oil painting"
    with torch.no_grad():
        skipped, _ = theirs.encode_prompt(prompt, "cpu", 1, False, clip_skip=clip_skip)
        plain, _ = theirs.encode_prompt(prompt, "cpu", 1, False)
    assert np.abs(skipped.numpy() - plain.numpy()).max() > 0.1  # the skip changes something
    mine, _ = ours.encode_prompt(prompt, clip_skip=clip_skip)
    assert np.abs(mine - skipped.numpy()).max() < EMBEDDING_TOLERANCE
    reference = _diffusers_images(theirs, prompt=prompt, clip_skip=clip_skip)
    result = ours(prompt, clip_skip=clip_skip, steps=2, seed=5, **SIZE)
    assert np.abs(_images(result) - reference).max() <= 1
    assert result.metadata(0, "m")["clip_skip"] == clip_skip


def test_lcm_lora_guided_weighted_prompt_and_negative_prompt_give_the_diffusers_image(
    ours_sd, theirs_sd
):
    case = CASES["guided"]
    reference = _diffusers_images(
        theirs_sd,
        prompt_embeds=EMBEDS["guided.prompt_embeds"],
        negative_prompt_embeds=EMBEDS["guided.negative_prompt_embeds"],
    )
    result = ours_sd(
        case["prompt"],
        negative_prompt=case["negative_prompt"],
        prompt_weighting=True,
        steps=2,
        seed=5,
        **SIZE,
    )
    assert result.settings.request.negative_prompt == case["negative_prompt"]  # guided: 8 > 1
    assert np.abs(_images(result) - reference).max() <= 1
    assert reference.std() > 10, "a flat image proves nothing"


def test_a_plain_prompt_is_still_diffusers_own_encoding(ours, theirs):
    prompt = ["a (red:1.4) cube [blurry] " * 8, "short"]  # brackets are text; truncated at 77
    ids = theirs.tokenizer(
        prompt, padding="max_length", max_length=77, truncation=True, return_tensors="np"
    ).input_ids
    tokens, _ = ours.prompt_encoder.tokenize(prompt, None, weighting=False)
    assert tokens.weights is None
    assert np.array_equal(tokens.input_ids[0], ids)
    mine, _ = ours.encode_prompt(prompt)
    assert np.array_equal(mine, ours._networks.text_encoder()(ids))  # one call, as before
    with torch.no_grad():
        reference, _ = theirs.encode_prompt(prompt, "cpu", 1, False)
    assert np.abs(mine - reference.numpy()).max() < EMBEDDING_TOLERANCE
