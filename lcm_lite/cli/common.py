"""Command-line pieces shared by every ``lcm-lite`` subcommand: the parser whose errors are one
line, the model options, number types, logging, and opening the pipeline the options describe."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

from lcm_lite.errors import UsageError

PROG = "lcm-lite"
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM killed


class Terminated(BaseException):
    """SIGTERM as an exception, so that cleanup runs (``finally``, ``except BaseException``) and
    no file or folder is left half-written."""


def raise_on_sigterm() -> None:
    """From now on, SIGTERM raises ``Terminated`` in the main thread (as Ctrl+C raises
    KeyboardInterrupt); the command catches it and exits ``EXIT_TERMINATED``."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


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
    parser.add_argument(
        "--tiny-vae",
        metavar="DIR|HUB_ID",
        help="tiny VAE (TAESD) folder or hub id, for --vae tiny and previews "
        "(default with --vae tiny: rupeshs/taesd-ov, downloaded once)",
    )
    parser.add_argument(
        "--device",
        default="CPU",
        help="OpenVINO device: CPU, GPU, GPU.1, NPU, AUTO, AUTO:GPU,CPU, HETERO:... (default CPU)",
    )
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


def vae_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vae",
        choices=["full", "tiny"],
        default="full",
        help="final decoder: the model's VAE (default) or the tiny VAE (TAESD: faster, softer, "
        "not the full VAE's image; with --image it encodes the picture too)",
    )


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


def timestep_list(text: str) -> list[int]:
    """An argparse type: comma-separated integer timesteps (the scheduler checks their order)."""
    try:
        return [int(word) for word in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def open_pipeline(args: argparse.Namespace, *, keep_models: bool):
    """Load ``--model`` (a folder or hub id; the default model if none) as the options say;
    ``--vae tiny`` without ``--tiny-vae`` takes the model's own tiny decoder if it has one, else
    the default tiny VAE."""
    from lcm_lite.models.hub import DEFAULT_MODEL
    from lcm_lite.models.vae import DEFAULT_TINY_VAE, load_tiny_vae
    from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
    from lcm_lite.runtime.blob_cache import default_cache_dir

    pipe = LCMPipeline.from_pretrained(
        args.model or DEFAULT_MODEL,
        revision=args.revision,
        device=args.device,
        precision=args.precision,
        cache_dir=None if args.no_cache else default_cache_dir(),
        keep_models=keep_models,
        tiny_vae=args.tiny_vae,
        loras=args.lora,
    )
    if getattr(args, "vae", "full") == "tiny" and not pipe.has_previews:
        pipe.tiny_vae = load_tiny_vae(DEFAULT_TINY_VAE, pipe.folder)
    return pipe


def configure_logging(quiet: bool) -> None:
    """Warnings on stderr unless quiet; on a terminal also what is being compiled."""
    level = logging.INFO if sys.stderr.isatty() else logging.WARNING
    logging.basicConfig(
        format=f"{PROG}: %(message)s", level=logging.ERROR if quiet else level, stream=sys.stderr
    )
    if quiet or not sys.stderr.isatty():  # huggingface_hub's download bars, likewise
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
