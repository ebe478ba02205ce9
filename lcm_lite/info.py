"""``lcm-lite info`` on a model: its folder, each network's inputs, the devices, the cache."""

from __future__ import annotations

from pathlib import Path

from .compiler import Compiler
from .folder import COMPONENTS, ModelFolder


def describe(root: Path, cache_dir: Path | None) -> str:
    """What ``lcm-lite info`` prints: the folder, each network's inputs, the devices, the cache."""
    folder = ModelFolder.open(root)
    compiler = Compiler()
    guidance = folder.time_cond_proj_dim or "none (Stable Diffusion: runs with an LCM-LoRA)"
    lines = [
        f"model: {folder.root}",
        f"native size: {folder.default_size}x{folder.default_size}, "
        f"guidance embedding dim: {guidance}",
    ]
    for component in COMPONENTS:
        model = compiler.read(folder.xml(component))
        size_mb = folder.xml(component).with_suffix(".bin").stat().st_size / 2**20
        lines.append(f"{component}: {size_mb:.1f} MB")
        for port in model.inputs:
            lines.append(
                f"  input {port.any_name}: {port.get_element_type().get_type_name()} "
                f"{port.get_partial_shape()}"
            )
    lines.append(f"devices: {', '.join(compiler.core.available_devices)}")
    if cache_dir is None:
        lines.append("compiled-model cache: off")
    else:
        cached = (
            sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
            if cache_dir.is_dir()
            else 0
        )
        lines.append(f"compiled-model cache: {cache_dir} ({cached / 2**20:.1f} MB)")
    return "\n".join(lines)
