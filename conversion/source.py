"""Find the diffusers folder to convert (local, or fetched from the hub); check it is an LCM
pipeline, a tiny autoencoder (``AutoencoderTiny``, e.g. madebyollin/taesd) or a ControlNet
(``ControlNetModel``, e.g. lllyasviel/control_v11p_sd15_canny)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from conversion.messages import first_line
from lcm_lite.errors import ModelError
from lcm_lite.models.configs import read_json_object

_COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
_CONFIG_FILES = ["model_index.json", "unet/config.json", "config.json"]
_MODEL_FILES = [
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
_SINGLE_MODEL_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
_SINGLE_MODELS = ("AutoencoderTiny", "ControlNetModel")  # a folder of one diffusers model


def open_source(source: str | Path) -> Path:
    """Return the local folder of the latent consistency model or tiny VAE ``source`` names.

    ``source`` is a diffusers folder or a hub repository id; from the hub only the configs are
    fetched before the checks of ``check_source_folder``, then the safetensors weights.
    """
    path = Path(source)
    if path.is_dir():
        check_source_folder(path, str(source))
        return path
    if path.exists():
        raise ModelError(
            f"{source} is a file, neither a diffusers pipeline folder nor a checkpoint "
            "(.safetensors, or .ckpt/.pt/.pth/.bin with --allow-pickle)"
        )
    try:
        huggingface_hub.utils.validate_repo_id(str(source))
    except HFValidationError:
        raise ModelError(f"{source}: no such folder") from None
    folder = _download(str(source), _CONFIG_FILES)
    check_source_folder(folder, str(source))
    single = model_class(folder) in _SINGLE_MODELS
    return _download(str(source), _SINGLE_MODEL_FILES if single else _MODEL_FILES)


def model_class(folder: Path) -> str | None:
    """The diffusers class a single-model folder's ``config.json`` names (``_class_name``), or
    None (a pipeline folder has a ``model_index.json`` instead)."""
    config = folder / "config.json"
    return read_json_object(config).get("_class_name") if config.is_file() else None


def is_tiny_vae(folder: Path) -> bool:
    """Whether ``folder`` is a diffusers ``AutoencoderTiny`` (its ``config.json`` says so)."""
    return model_class(folder) == "AutoencoderTiny"


def is_controlnet(folder: Path) -> bool:
    """Whether ``folder`` is a diffusers ``ControlNetModel`` (its ``config.json`` says so)."""
    return model_class(folder) == "ControlNetModel"


def is_latent_consistency_model(folder: Path) -> bool:
    """Whether the diffusers ``folder``'s UNet takes a guidance embedding (``time_cond_proj_dim``);
    if not, it is a plain Stable Diffusion model, which an LCM-LoRA makes few-step."""
    config = read_json_object(folder / "unet" / "config.json")
    return bool(config.get("time_cond_proj_dim"))


def is_inpainting(folder: Path) -> bool:
    """Whether the diffusers ``folder``'s UNet is an inpainting one: 9 input channels (latents,
    mask and the masked picture's latents), as stable-diffusion-v1-5/stable-diffusion-inpainting."""
    config = read_json_object(folder / "unet" / "config.json")
    return config.get("in_channels", 4) == 9


def check_source_folder(folder: Path, name: str) -> None:
    """Refuse a folder that is neither a tiny VAE, a ControlNet nor an LCM pipeline
    (``check_lcm_folder``)."""
    if model_class(folder) in _SINGLE_MODELS:
        return
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"{name} is neither a diffusers pipeline (no model_index.json) nor a tiny VAE or "
            "ControlNet (no config.json naming AutoencoderTiny or ControlNetModel)"
        )
    check_lcm_folder(folder, name)


def check_lcm_folder(folder: Path, name: str) -> None:
    """Refuse a folder that is not a diffusers Stable Diffusion pipeline with all components.

    A latent consistency model's UNet is conditioned on ``w`` through ``timestep_cond`` (its
    config sets ``time_cond_proj_dim``); a plain Stable Diffusion 1.5 UNet is exported too, for
    LCM-LoRA (fused with ``--lora``, or applied by the runtime).
    """
    model_index = _read_json(folder / "model_index.json", name, "it is not a diffusers pipeline")
    # diffusers writes each component as [library, class], and [null, null] when it is absent.
    missing = [part for part in _COMPONENTS if model_index.get(part, [None])[0] is None]
    if missing:
        raise ModelError(f"{name} has no {', '.join(missing)} component(s) in model_index.json")
    _read_json(folder / "unet" / "config.json", name, "its UNet has no config")


def _read_json(path: Path, name: str, meaning: str) -> dict[str, Any]:
    """The JSON object in ``path``; its absence is a ModelError that says what it means."""
    if not path.is_file():
        raise ModelError(f"{name}: {meaning} (no {path.name})")
    return read_json_object(path)


def _download(repo_id: str, patterns: list[str]) -> Path:
    """Fetch the files of ``repo_id`` matching ``patterns`` (or find them in the hub cache)."""
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise ModelError(
            f"cannot get {repo_id}: the Hugging Face hub is unreachable and it is not in the cache"
        ) from None
    except OSError as error:
        raise ModelError(
            f"cannot get {repo_id} from the Hugging Face hub: {first_line(error)}"
        ) from None
