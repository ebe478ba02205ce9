"""``lcm-lite info`` on a model: its folder, each network's inputs, the devices, the cache."""

from __future__ import annotations

from pathlib import Path

from lcm_lite.models.folder import COMPONENTS, ModelFolder
from lcm_lite.models.vae import load_tiny_vae, own_tiny_vae
from lcm_lite.runtime.blob_cache import cache_size_limit, cache_usage
from lcm_lite.runtime.compiler import Compiler, describe_devices


def describe(root: Path, cache_dir: Path | None, tiny_vae: str | None = None) -> str:
    """What ``lcm-lite info`` prints: the folder, each network's inputs, the tiny VAE (``tiny_vae``,
    or the model's own TAESD decoder), the devices, the cache."""
    folder = ModelFolder.open(root)
    compiler = Compiler()
    guidance = folder.time_cond_proj_dim or "none (Stable Diffusion: runs with an LCM-LoRA)"
    lines = [
        f"model: {folder.root}",
        f"native size: {folder.default_size}x{folder.default_size}, "
        f"guidance embedding dim: {guidance}",
    ]
    for component in (*COMPONENTS, "vae_encoder"):
        if not folder.xml(component).is_file():  # only the VAE encoder is optional
            lines.append(f"{component}: none (image to image needs it: see --with-vae-encoder)")
            continue
        model = compiler.read(folder.xml(component))
        size_mb = folder.xml(component).with_suffix(".bin").stat().st_size / 2**20
        lines.append(f"{component}: {size_mb:.1f} MB")
        for port in model.inputs:
            lines.append(
                f"  input {port.any_name}: {port.get_element_type().get_type_name()} "
                f"{port.get_partial_shape()}"
            )
    tiny = own_tiny_vae(folder) if tiny_vae is None else load_tiny_vae(tiny_vae, folder)
    if tiny is not None:
        lines.append(
            f"tiny VAE (previews, --vae tiny): {tiny.root} ({tiny.config.class_name}, "
            f"scaling factor {tiny.config.scaling_factor:g})"
        )
    lines.append(f"devices: {describe_devices(compiler.core)}")
    if cache_dir is None:
        lines.append("compiled-model cache: off")
    else:
        used = cache_usage(cache_dir) if cache_dir.is_dir() else 0
        lines.append(
            f"compiled-model cache: {cache_dir} ({used / 2**20:.1f} MB used of "
            f"{cache_size_limit() / 2**20:.0f} MB, LCM_LITE_CACHE_SIZE)"
        )
    return "\n".join(lines)
