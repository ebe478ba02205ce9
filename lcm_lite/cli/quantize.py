"""``lcm-lite quantize MODEL OUT_DIR``: a copy of a model folder whose UNet has int8 weights and
activations (NNCF post-training quantization, the ``[quantize]`` extra; no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

from lcm_lite.cli.common import PROG, Parser, StageBars, StageLines, integer
from lcm_lite.extras import require_extra
from lcm_lite.quantization import (
    DEFAULT_PRESET,
    DEFAULT_SAMPLES,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    EXTRA_MODULES,
    PRESETS,
)


def quantize_parser() -> Parser:
    parser = Parser(
        prog=f"{PROG} quantize",
        description="Write a copy of MODEL whose UNet is quantized to int8 weights and "
        "activations (NNCF), calibrated on the UNet's inputs while lcm-lite generates from "
        "built-in prompts; the other networks are copied unchanged. Runs faster on CPUs with "
        "int8 dot products (AVX-512 VNNI, AMX).",
    )
    parser.add_argument("model", help="model folder (fp16 or fp32 weights) or hub id")
    parser.add_argument("out_dir", type=Path, help="folder to create")
    parser.add_argument(
        "--size",
        type=integer,
        default=DEFAULT_SIZE,
        help=f"calibration image side (default {DEFAULT_SIZE})",
    )
    parser.add_argument(
        "--steps",
        type=integer,
        default=DEFAULT_STEPS,
        help=f"steps per calibration image (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--samples",
        type=integer,
        default=DEFAULT_SAMPLES,
        help=f"UNet calls recorded for calibration (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default=DEFAULT_PRESET,
        help="NNCF's preset: mixed (asymmetric activations, the OpenVINO notebook's) or "
        "performance (symmetric activations: faster steps and start; default "
        f"{DEFAULT_PRESET})",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    return parser


def main(argv: list[str]) -> int:
    args = quantize_parser().parse_args(argv)
    require_extra("quantize", EXTRA_MODULES, f"{PROG} quantize")
    from lcm_lite.quantization.folder import quantize_model

    quantize_model(
        args.model,
        args.out_dir,
        size=args.size,
        steps=args.steps,
        samples=args.samples,
        preset=args.preset,
        force=args.force,
        progress=None if args.quiet else StageBars() if sys.stderr.isatty() else StageLines(),
    )
    if not args.quiet:
        print(f"{PROG} quantize: wrote {args.out_dir}", file=sys.stderr)
    return 0
