"""A single-file Stable Diffusion 1.5 checkpoint (the original CompVis / LDM layout Civitai and
A1111 share: ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*``) as a
diffusers folder, which the export then converts as any other.

diffusers reads it: ``StableDiffusionPipeline.from_single_file(file, config=DIR)``, with ``DIR``
a diffusers-layout folder of component configs and tokenizer files; by default SD 1.5's, shipped
with lcm-lite-convert (``conversion/sd15``, the CLIP vocabulary written from its merges), so no
hub is needed. The checkpoint's family is named from its keys and shapes by diffusers'
``infer_diffusers_model_type`` before anything is loaded into a model; only SD 1.x is converted.

A ``.ckpt`` (or ``.pt``, ``.pth``, ``.bin``) is a pickle, which can run code when loaded: it is
read (with torch's ``weights_only`` unpickler, as diffusers reads it) only when asked for with
``allow_pickle``.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.loaders.single_file_utils import (
    infer_diffusers_model_type,
    load_single_file_checkpoint,
)

from conversion.clip_vocab import read_merges, write_clip_vocab
from conversion.messages import first_line
from conversion.tokenizer import save_clip_tokenizer
from lcm_lite.errors import ModelError, UsageError

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# The keys an SD 1.x checkpoint has: its UNet's first convolution, VAE, and CLIP text encoder.
_SD1_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": "UNet (model.diffusion_model)",
    "first_stage_model.decoder.conv_in.weight": "VAE (first_stage_model)",
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (
        "CLIP text encoder (cond_stage_model.transformer)"
    ),
}
_FAMILIES = {  # diffusers' model types, as people name them
    "v2": "a Stable Diffusion 2.x checkpoint",
    "inpainting": "a Stable Diffusion 1.x inpainting checkpoint (9 input channels)",
    "inpainting_v2": "a Stable Diffusion 2.x inpainting checkpoint",
    "xl_base": "an SDXL checkpoint",
    "xl_refiner": "an SDXL refiner checkpoint",
    "xl_inpaint": "an SDXL inpainting checkpoint",
    "playground-v2-5": "a Playground v2.5 (SDXL) checkpoint",
    "instruct-pix2pix": "an InstructPix2Pix checkpoint",
    "upscale": "a Stable Diffusion x4 upscaler checkpoint",
}


def is_checkpoint_file(source: str | Path) -> bool:
    """Whether ``source`` is a file of a single-file checkpoint format."""
    path = Path(source)
    return path.is_file() and path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES


@contextlib.contextmanager
def checkpoint_folder(
    checkpoint: Path,
    scratch_parent: Path,
    *,
    config: Path | None = None,
    allow_pickle: bool = False,
    report: Callable[[str], None] = lambda _line: None,
) -> Iterator[Path]:
    """Yield a diffusers folder holding the SD 1.5 ``checkpoint``, written in a temporary folder
    under ``scratch_parent`` (deleted after, as on any error or interruption). ``config``: a
    diffusers-layout folder of configs (``model_index.json``, ``unet/config.json``, ...,
    ``tokenizer/``) instead of the shipped SD 1.5 ones. Raises UsageError for a pickle without
    ``allow_pickle`` or a config folder that is not one, ModelError for a checkpoint that is not
    SD 1.x (naming what it is) or that does not load. ``report`` is told when it is read."""
    suffix = checkpoint.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise UsageError(
            f"{checkpoint.name} is a pickle ({suffix}), which can run code when loaded: pass "
            "--allow-pickle if you trust its source, or use a .safetensors file"
        )
    if config is not None and not (config / "model_index.json").is_file():
        raise UsageError(f"--config {config} has no model_index.json: not a diffusers folder")
    dtype = check_sd15_checkpoint(checkpoint)
    kind = str(dtype).removeprefix("torch.")
    report(f"{checkpoint.name}: a Stable Diffusion 1.x checkpoint ({kind}), reading it")
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".checkpoint-", dir=scratch_parent) as scratch:
        config_dir = config or _shipped_config(Path(scratch) / "config")
        try:
            pipeline = StableDiffusionPipeline.from_single_file(
                str(checkpoint),
                config=str(config_dir),
                local_files_only=True,
                torch_dtype=dtype,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        except Exception as error:  # diffusers and transformers raise many types on a bad file
            raise ModelError(f"cannot read {checkpoint.name}: {first_line(error)}") from None
        folder = Path(scratch) / "diffusers"
        pipeline.save_pretrained(folder, safe_serialization=True)
        save_clip_tokenizer(pipeline.tokenizer, folder / "tokenizer")
        del pipeline
        yield folder


def check_sd15_checkpoint(checkpoint: Path) -> torch.dtype:
    """The dtype of the SD 1.x ``checkpoint``'s UNet weights; a one-line ModelError naming
    the family of any other checkpoint (diffusers' ``infer_diffusers_model_type``) or the part an
    SD 1.x checkpoint lacks. A safetensors file is read for its keys and shapes alone."""
    tensors = _key_shapes(checkpoint)
    try:
        family = infer_diffusers_model_type(tensors)
    except Exception as error:  # its checks of other families' tensors, on shapes alone
        raise ModelError(f"cannot tell what {checkpoint.name} is: {first_line(error)}") from None
    if family != "v1":
        what = _FAMILIES.get(family, f"a {family} checkpoint (as diffusers names it)")
        raise ModelError(
            f"{checkpoint.name} is {what}: lcm-lite-convert converts Stable Diffusion 1.x "
            "checkpoints (SD 1.5 and its fine-tunes)"
        )
    missing = [part for key, part in _SD1_KEYS.items() if key not in tensors]
    if missing:
        lora = any(".lora_" in key or "lora_unet_" in key for key in tensors)
        hint = " (it looks like a LoRA: pass it with --lora)" if lora else ""
        raise ModelError(
            f"{checkpoint.name} is not a Stable Diffusion 1.x checkpoint: it has no "
            f"{', '.join(missing)} weights{hint}"
        )
    return tensors["model.diffusion_model.input_blocks.0.0.weight"].dtype


def _key_shapes(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Each tensor of ``checkpoint`` as a meta tensor (its shape and dtype, no data): read from a
    safetensors header; a pickle is loaded (``weights_only``), as diffusers loads it."""
    try:
        if checkpoint.suffix.lower() in SAFE_SUFFIXES:
            from safetensors import safe_open

            with safe_open(checkpoint, framework="pt", device="cpu") as file:
                return {key: _meta(file.get_slice(key)) for key in file.keys()}  # noqa: SIM118
        state = load_single_file_checkpoint(str(checkpoint))
        return {key: value.to("meta") for key, value in state.items() if torch.is_tensor(value)}
    except Exception as error:  # a damaged header or pickle raises many types
        raise ModelError(
            f"cannot read {checkpoint.name}: {first_line(error)} (not a checkpoint, or damaged)"
        ) from None


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def _meta(tensor_slice: object) -> torch.Tensor:
    """A safetensors slice as a meta tensor of its shape and (float) dtype."""
    dtype = _SAFETENSORS_DTYPES.get(tensor_slice.get_dtype(), torch.float32)
    return torch.empty(tensor_slice.get_shape(), dtype=dtype, device="meta")


def _shipped_config(directory: Path) -> Path:
    """SD 1.5's configs (``conversion/sd15``) copied to ``directory``, with CLIP's vocabulary
    written from the shipped merges. Returns ``directory``."""
    with resources.as_file(resources.files("conversion") / "sd15") as shipped:
        shutil.copytree(shipped, directory, ignore=shutil.ignore_patterns("*.gz", "*.md"))
        merges = gzip.decompress((shipped / "tokenizer" / "merges.txt.gz").read_bytes())
    write_clip_vocab(directory / "tokenizer", read_merges(merges.decode("utf-8")))
    return directory
