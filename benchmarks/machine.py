"""What every benchmark figure names: the CPU, its vector flags, OpenVINO's version."""

from __future__ import annotations

import os
import platform
from pathlib import Path

VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and which of ``VECTOR_FLAGS`` it has (Linux: /proc/cpuinfo); the name
    says when the run caps oneDNN's instruction sets (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``:
    this CPU as one without AMX)."""
    name, flags = platform.processor(), set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        if key.strip() == "flags":
            flags = set(value.split())
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        name += f", oneDNN capped at ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}"
    return name, [flag for flag in VECTOR_FLAGS if flag in flags]
