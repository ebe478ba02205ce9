"""``lcm-lite-convert`` / ``python -m conversion``: export an LCM to an OpenVINO IR folder.

Errors are one line on stderr with the exit code of ``lcm_lite.errors`` (2 usage, 3 model,
5 output, 130 interrupted by Ctrl+C, 143 terminated by SIGTERM); an interrupted or terminated
export leaves no output folder and no staging folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conversion import WEIGHT_FORMATS
from lcm_lite.cli.common import EXIT_TERMINATED, Parser, Terminated, add_options, raise_on_sigterm
from lcm_lite.errors import Cancelled, LcmLiteError
from lcm_lite.extras import require_extra
from lcm_lite.request import LoadOptions

PROG = "lcm-lite-convert"
CONVERT_MODULES = (
    "torch",
    "diffusers",
    "transformers",
    "safetensors",
    "openvino_tokenizers",
    "nncf",
)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Export a latent consistency model (e.g. SimianLuo/LCM_Dreamshaper_v7) to "
        "OpenVINO IR, in the folder layout openvino_genai and optimum-intel read; or a tiny VAE "
        "(AutoencoderTiny, e.g. madebyollin/taesd) to the vae_decoder/ + vae_encoder/ folder "
        "that --tiny-vae takes; or a single-file Stable Diffusion 1.5 checkpoint (.safetensors "
        "in the original layout, as Civitai shares them).",
    )
    parser.add_argument(
        "source",
        help="local diffusers folder (LCM pipeline or AutoencoderTiny), hub id, or an SD 1.5 "
        "checkpoint file (.safetensors; .ckpt with --allow-pickle)",
    )
    parser.add_argument("out_dir", type=Path, help="folder to create")
    parser.add_argument(
        "--weights",
        choices=WEIGHT_FORMATS,
        default="fp16",
        help="weight format: fp32, fp16 (default) or int8 (NNCF weight compression)",
    )
    encoder = parser.add_mutually_exclusive_group()
    encoder.add_argument(
        "--with-vae-encoder",
        action="store_true",
        help="export the VAE encoder, which image to image needs (the default)",
    )
    encoder.add_argument(
        "--without-vae-encoder",
        dest="with_vae_encoder",
        action="store_false",
        help="leave the VAE encoder out (text to image only; saves about 3%% of the folder)",
    )
    parser.set_defaults(with_vae_encoder=True)
    parser.add_argument(
        "--quantize-unet",
        action="store_true",
        help="8-bit post-training quantization of the UNet (NNCF), calibrated on built-in prompts"
        " with the exported model (LoRAs fused; a plain SD model needs its LCM-LoRA)",
    )
    add_options(
        parser,
        LoadOptions,
        only=["loras"],
        help={
            "loras": "fuse a LoRA into the exported weights (repeatable; an LCM-LoRA makes a "
            "plain Stable Diffusion 1.5 model a 4-step one)"
        },
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="DIR",
        help="a checkpoint's diffusers-layout configs (model_index.json, unet/config.json, ..., "
        "tokenizer/) (default: Stable Diffusion 1.5's, shipped with lcm-lite-convert)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read a .ckpt/.pt checkpoint: a pickle, which can run code when loaded (trusted "
        "files only; .safetensors needs no such flag)",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return parser


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    raise_on_sigterm()
    try:
        args = _parser().parse_args(argv)
        require_extra("convert", CONVERT_MODULES, PROG)
        from conversion.export import convert
        from conversion.messages import silence_libraries

        silence_libraries()
        convert(
            args.source,
            args.out_dir,
            weights=args.weights,
            with_vae_encoder=args.with_vae_encoder,
            force=args.force,
            quantize_unet=args.quantize_unet,
            loras=args.loras or [],
            progress=None if args.quiet else _say,
            config=args.config,
            allow_pickle=args.allow_pickle,
        )
    except KeyboardInterrupt:
        error: LcmLiteError = Cancelled("interrupted: the output folder was not written")
    except Terminated:
        _say("terminated: the output folder was not written")
        return EXIT_TERMINATED
    except LcmLiteError as raised:
        error = raised
    else:
        return 0
    _say(f"error: {error}")
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
