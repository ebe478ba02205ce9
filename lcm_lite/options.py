"""Command-line pieces shared by every ``lcm-lite`` subcommand: the parser whose errors are one
line, the model options, number types, logging, and opening the pipeline the options describe."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from .errors import UsageError

PROG = "lcm-lite"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageErrors: one line, exit 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="local model folder or hub id "
        "(default: OpenVINO/LCM_Dreamshaper_v7-int8-ov, downloaded once)",
    )
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) of --model")
    parser.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU, AUTO")
    parser.add_argument(
        "--precision",
        choices=["f32", "bf16", "f16"],
        help="inference precision hint (default: the device's; f32 for exact parity)",
    )
    lora_argument(
        parser,
        "a LoRA adapter (.safetensors, kohya or diffusers/PEFT) and its weight (default 1.0);"
        " repeat to blend several. An LCM-LoRA (latent-consistency/lcm-lora-sdv1-5) runs any"
        " Stable Diffusion 1.5 model in 4 steps",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not keep compiled models in the per-user cache"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no warnings")


def lora_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--lora FILE|HUB_ID[:WEIGHT]``, repeatable: a list of (file or hub id, weight)."""
    parser.add_argument(
        "--lora",
        action="append",
        type=lora_option,
        default=[],
        metavar="FILE|HUB_ID[:WEIGHT]",
        help=help,
    )


def lora_option(text: str) -> tuple[str, float]:
    """An argparse type: ``FILE|HUB_ID[:WEIGHT]`` -> (file or hub id, weight), weight 1.0 unless
    the text after the last colon is a number."""
    source, separator, weight = text.rpartition(":")
    if separator and source:
        try:
            return source, float(weight)
        except ValueError:
            pass
    return text, 1.0


def integer(text: str) -> int:
    """An argparse type: an integer (range checks come later, with the other parameters)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def open_pipeline(args: argparse.Namespace, *, keep_models: bool):
    """Load ``--model`` (a folder or hub id; the default model if none) as the options say."""
    from .blob_cache import default_cache_dir
    from .hub import DEFAULT_MODEL
    from .pipeline import LCMPipeline

    return LCMPipeline.from_pretrained(
        args.model or DEFAULT_MODEL,
        revision=args.revision,
        device=args.device,
        precision=args.precision,
        cache_dir=None if args.no_cache else default_cache_dir(),
        keep_models=keep_models,
        loras=args.lora,
    )


def configure_logging(quiet: bool) -> None:
    """Warnings on stderr unless quiet; on a terminal also what is being compiled."""
    level = logging.INFO if sys.stderr.isatty() else logging.WARNING
    logging.basicConfig(
        format=f"{PROG}: %(message)s", level=logging.ERROR if quiet else level, stream=sys.stderr
    )
    if quiet or not sys.stderr.isatty():  # huggingface_hub's download bars, likewise
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
