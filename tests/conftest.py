"""Shared fixtures, and the tiers.

Each folder of tests/ is a tier, and its tests carry its marker (``unit``, ``pipeline``,
``parity``, ``cli``, ``server``, ``convert``, ``browser``); tests elsewhere that compare with a
reference library are marked ``parity`` too, and long ones ``slow``. The fast loop while editing:
``pytest -m "not slow and not browser"`` (docs: Testing).

Model fixtures (conversion/): a tiny random-weight LCM built once per session, as a diffusers
folder and as its OpenVINO export. They need the ``convert`` extra (torch, diffusers), imported
inside the fixtures so that runtime tests run without it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_CLIP_VOCAB = REPO_ROOT.parent / "shared" / "clip-vocab"
TIERS = ("unit", "pipeline", "parity", "cli", "server", "convert", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets the marker of the tier folder it is in."""
    tests = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(tests) and (folder := path.relative_to(tests).parts[0]) in TIERS:
            item.add_marker(folder)


@pytest.fixture(scope="session")
def clip_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CLIP BPE vocabulary (../shared/clip-vocab) if present, else a synthetic one."""
    if (REAL_CLIP_VOCAB / "vocab.json").is_file() and (REAL_CLIP_VOCAB / "merges.txt").is_file():
        return REAL_CLIP_VOCAB
    from conversion.clip_vocab import write_synthetic_clip_vocab

    return write_synthetic_clip_vocab(tmp_path_factory.mktemp("clip-vocab"))


@pytest.fixture(scope="session")
def tiny_diffusers_dir(tmp_path_factory: pytest.TempPathFactory, clip_vocab_dir: Path) -> Path:
    """A tiny random-weight LatentConsistencyModelPipeline folder (float32 safetensors)."""
    pytest.importorskip("diffusers")
    from conversion.random_model import build_random_lcm

    out_dir = tmp_path_factory.mktemp("tiny-lcm") / "diffusers"
    return build_random_lcm(out_dir, size="tiny", vocab_dir=clip_vocab_dir, seed=0)


@pytest.fixture(scope="session")
def tiny_ov_dir(tmp_path_factory: pytest.TempPathFactory, tiny_diffusers_dir: Path) -> Path:
    """``tiny_diffusers_dir`` exported to OpenVINO IR with float32 weights and the VAE encoder."""
    from conversion.export import convert

    out_dir = tmp_path_factory.mktemp("tiny-lcm-ov") / "openvino"
    return convert(tiny_diffusers_dir, out_dir, weights="fp32", with_vae_encoder=True)


@pytest.fixture(scope="session")
def f32_pipe(tiny_ov_dir: Path):
    """The lcm_lite pipeline on ``tiny_ov_dir``, compiled with the f32 hint (exact parity)."""
    from lcm_lite import LCMPipeline

    return LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32")


@pytest.fixture()
def sigint_reaches_children() -> Iterator[None]:
    """Children started in the test take SIGINT as Python does (KeyboardInterrupt), even when
    pytest itself runs with SIGINT ignored (``nohup``, a shell's background job, cron), which a
    child inherits: an inherited "ignore" is honoured by lcm-lite, as it should be."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``tmpfs(name, options)`` mounts a fresh tmpfs with those mount(8) options at
    ``tmp_path/name`` (a full disk, a read-only or a ``noatime`` file system) and returns it;
    unmounted after the test. Mounting needs root: elsewhere the test is skipped, but in CI
    (``CI=true``), which runs as root, a mount that fails fails the test instead."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            if os.environ.get("CI", "").lower() == "true" and os.geteuid() == 0:
                pytest.fail(f"CI runs as root, yet mounting a tmpfs failed: {run.stderr.strip()}")
            pytest.skip("mounting a tmpfs needs root")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture(scope="session")
def tiny_taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight AutoencoderTiny (TAESD's 4 blocks, 8 channels) as a diffusers folder."""
    pytest.importorskip("diffusers")
    from conversion.random_model import build_random_tiny_vae

    return build_random_tiny_vae(tmp_path_factory.mktemp("tiny-taesd") / "diffusers", size="tiny")


@pytest.fixture(scope="session")
def tiny_taesd_ov_dir(tmp_path_factory: pytest.TempPathFactory, tiny_taesd_dir: Path) -> Path:
    """``tiny_taesd_dir`` converted to a tiny-VAE folder (vae_decoder/, vae_encoder/), fp32."""
    from conversion.export import convert

    return convert(tiny_taesd_dir, tmp_path_factory.mktemp("tiny-taesd-ov") / "ov", weights="fp32")


@pytest.fixture(scope="session")
def previews_pipe(tiny_ov_dir: Path, tiny_taesd_ov_dir: Path):
    """``f32_pipe`` with the tiny VAE loaded: step previews and ``vae="tiny"``."""
    from lcm_lite import LCMPipeline

    return LCMPipeline.from_pretrained(tiny_ov_dir, precision="f32", tiny_vae=tiny_taesd_ov_dir)


@pytest.fixture(scope="session")
def tiny_sd_diffusers_dir(tmp_path_factory, clip_vocab_dir) -> Path:
    """A tiny random plain Stable Diffusion pipeline (no time_cond_proj_dim, PNDM scheduler):
    the model an LCM-LoRA makes few-step."""
    pytest.importorskip("diffusers")
    from conversion.random_model import build_random_sd

    out_dir = tmp_path_factory.mktemp("tiny-sd") / "diffusers"
    return build_random_sd(out_dir, size="tiny", vocab_dir=clip_vocab_dir, seed=0)


@pytest.fixture(scope="session")
def tiny_sd_ov_dir(tmp_path_factory, tiny_sd_diffusers_dir) -> Path:
    """``tiny_sd_diffusers_dir`` exported to OpenVINO IR with float32 weights."""
    from conversion.export import convert

    out_dir = tmp_path_factory.mktemp("tiny-sd-ov") / "openvino"
    return convert(tiny_sd_diffusers_dir, out_dir, weights="fp32")


@pytest.fixture(scope="session")
def lcm_lora(tiny_sd_diffusers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA for ``tiny_sd_diffusers_dir`` shaped like latent-consistency/lcm-lora-sdv1-5:
    kohya keys, every UNet layer, no text encoder (rank 8, alpha 8)."""
    from conversion.random_model import build_random_lora

    path = tmp_path_factory.mktemp("loras") / "lcm-lora.safetensors"
    return build_random_lora(
        tiny_sd_diffusers_dir, path, rank=8, alpha=8.0, text_encoder=False, seed=3
    )


@pytest.fixture(scope="session")
def sd_lcm_lora_pipe(tiny_sd_ov_dir: Path, lcm_lora: Path):
    """A plain Stable Diffusion model with an LCM-LoRA: it takes negative prompts."""
    from lcm_lite import LCMPipeline

    return LCMPipeline.from_pretrained(tiny_sd_ov_dir, precision="f32", loras=[(lcm_lora, 1.0)])


@pytest.fixture(scope="session")
def kohya_lora(tiny_diffusers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA for ``tiny_diffusers_dir``: kohya format, rank 4, alpha 2 (scale alpha/rank =
    0.5), UNet and text encoder."""
    from conversion.random_model import build_random_lora

    path = tmp_path_factory.mktemp("loras") / "kohya.safetensors"
    return build_random_lora(tiny_diffusers_dir, path, rank=4, alpha=2.0, seed=1)


@pytest.fixture(scope="session")
def peft_lora(tiny_diffusers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA for ``tiny_diffusers_dir``: diffusers/PEFT format, rank 8, lora_alpha 4 in
    the lora_adapter_metadata header."""
    from conversion.random_model import build_random_lora

    path = tmp_path_factory.mktemp("loras") / "peft.safetensors"
    return build_random_lora(
        tiny_diffusers_dir, path, rank=8, alpha=4.0, lora_format="peft", seed=2
    )


def _random_controlnet(tmp_path_factory, model_dir: Path, seed: int) -> tuple[Path, Path]:
    """A random ControlNet for ``model_dir`` (non-zero zero convolutions), as a diffusers folder
    and converted to an fp32 ControlNet folder."""
    pytest.importorskip("diffusers")
    from conversion.export import convert
    from conversion.random_model import build_random_controlnet

    root = tmp_path_factory.mktemp(f"controlnet-{seed}")
    source = build_random_controlnet(model_dir, root / "diffusers", seed=seed)
    return source, convert(source, root / "openvino", weights="fp32")


@pytest.fixture(scope="session")
def tiny_controlnet(tmp_path_factory, tiny_diffusers_dir) -> tuple[Path, Path]:
    """A random ControlNet for the tiny LCM: (diffusers folder, converted folder)."""
    return _random_controlnet(tmp_path_factory, tiny_diffusers_dir, seed=1)


@pytest.fixture(scope="session")
def second_tiny_controlnet(tmp_path_factory, tiny_diffusers_dir) -> tuple[Path, Path]:
    """Another random ControlNet for the tiny LCM, for two at once."""
    return _random_controlnet(tmp_path_factory, tiny_diffusers_dir, seed=2)


@pytest.fixture(scope="session")
def tiny_sd_controlnet(tmp_path_factory, tiny_sd_diffusers_dir) -> tuple[Path, Path]:
    """A random ControlNet for the tiny plain Stable Diffusion model."""
    return _random_controlnet(tmp_path_factory, tiny_sd_diffusers_dir, seed=3)


@pytest.fixture(scope="session")
def controlnet_pipe(tiny_ov_dir: Path, tiny_controlnet, tiny_taesd_ov_dir: Path):
    """``f32_pipe`` with the tiny ControlNet (and the tiny VAE, for vae="tiny")."""
    from lcm_lite import LCMPipeline

    return LCMPipeline.from_pretrained(
        tiny_ov_dir, precision="f32", controlnet=tiny_controlnet[1], tiny_vae=tiny_taesd_ov_dir
    )
