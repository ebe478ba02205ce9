"""Command-line pieces shared by every ``lcm-lite`` subcommand: the parser whose errors are one
line, options derived from the declared fields (``request.Request``, ``request.LoadOptions``),
logging, signals, and opening the pipeline the options describe."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from lcm_lite import fields as text_fields
from lcm_lite.errors import UsageError
from lcm_lite.fields import PARSERS, Spec, lora_list, specs
from lcm_lite.request import LoadOptions

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


def add_options(
    parser: argparse.ArgumentParser,
    declared: type,
    only: Sequence[str] | None = None,
    help: Mapping[str, str] | None = None,
) -> None:
    """An option for each field of the dataclass ``declared`` (``Request``, ``LoadOptions``)
    that has one (``Spec.flag``), with its help (or ``help[name]``), its default and its text
    parser; ``only``: these fields alone. Options not given stay None, so that the dataclass's
    defaults apply."""
    dataclass_fields = {item.name: item for item in fields(declared)}
    for name, field_spec in specs(declared).items():
        if not field_spec.flag or field_spec.kind not in PARSERS or (only and name not in only):
            continue
        default = dataclass_fields[name].default
        shown = field_spec.default_help or (None if default is None else default)
        if field_spec.kind == "flag":  # --prompt-weighting / --no-prompt-weighting
            parser.add_argument(
                field_spec.flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=(help or {}).get(name, field_spec.help) + f" (default: {shown})",
            )
            continue
        parser.add_argument(
            field_spec.flag,
            dest=name,
            type=argparse_type(PARSERS[field_spec.kind]),
            choices=field_spec.choices or None,
            metavar=field_spec.metavar or _metavar(field_spec),
            action="append" if field_spec.kind == "loras" or field_spec.repeatable else "store",
            help=(help or {}).get(name, field_spec.help)
            + ("" if shown is None else f" (default: {shown})"),
        )


def _metavar(field_spec: Spec) -> str | None:
    """``--num-images NUM_IMAGES``; choices show themselves (``{full,tiny}``)."""
    if field_spec.choices:
        return None
    return field_spec.flag.lstrip("-").replace("-", "_").upper()


def argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse type: a ValueError becomes argparse's one-line error; a
    repeatable LoRA option gives one (source, weight) pair per occurrence."""

    def parse_word(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value[0] if parse is lora_list else value

    return parse_word


integer = argparse_type(text_fields.integer)  # for the commands' own integer options


def given(
    args: argparse.Namespace, declared: type, only: Sequence[str] | None = None
) -> dict[str, Any]:
    """The options of ``declared``'s fields (``only`` these) that the command line gave."""
    return {
        name: getattr(args, name)
        for name, field_spec in specs(declared).items()
        if field_spec.flag
        and getattr(args, name, None) is not None
        and (only is None or name in only)
    }


def model_options(parser: argparse.ArgumentParser) -> None:
    """``LoadOptions``' options, the cache switch and ``--quiet``."""
    add_options(parser, LoadOptions)
    parser.add_argument(
        "--no-cache", action="store_true", help="do not keep compiled models in the per-user cache"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no warnings")


def model_label(model: str | None) -> str:
    """The model's name for /api/info and the PNG metadata: a hub id, or a folder's own name
    (its full path stays private)."""
    from lcm_lite.models.hub import DEFAULT_MODEL

    if model is None:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    return path.resolve().name if path.is_dir() else model


def queue_size_option(parser: argparse.ArgumentParser, overflow: str) -> None:
    """``--queue-size``: how many requests may wait while one runs (``overflow``: what happens to
    more); check it with :func:`check_queue_size`."""
    parser.add_argument(
        "--queue-size",
        type=integer,
        default=4,
        help=f"requests that may wait while one runs; more {overflow} (default 4)",
    )


def check_queue_size(size: int) -> None:
    if size < 1:
        raise UsageError(f"--queue-size must be at least 1, got {size}")


def open_pipeline(args: argparse.Namespace, *, keep_models: bool):
    """Load the model the options name (the default model if none); ``--vae tiny`` without
    ``--tiny-vae`` takes the model's own tiny decoder if it has one, else the default tiny VAE."""
    from lcm_lite.models.vae import DEFAULT_TINY_VAE
    from lcm_lite.pipeline import LCMPipeline
    from lcm_lite.runtime.blob_cache import default_cache_dir

    pipe = LCMPipeline.from_options(
        LoadOptions(**given(args, LoadOptions)),
        cache_dir=None if args.no_cache else default_cache_dir(),
        keep_models=keep_models,
    )
    if getattr(args, "vae", None) == "tiny" and not pipe.has_previews:
        pipe.load_tiny_vae(DEFAULT_TINY_VAE)
    return pipe


def configure_logging(quiet: bool) -> None:
    """Warnings on stderr unless quiet; on a terminal also what is being compiled."""
    level = logging.INFO if sys.stderr.isatty() else logging.WARNING
    logging.basicConfig(
        format=f"{PROG}: %(message)s", level=logging.ERROR if quiet else level, stream=sys.stderr
    )
    if quiet or not sys.stderr.isatty():  # huggingface_hub's download bars, likewise
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class StageBars:
    """One tqdm bar on stderr per stage of a call (compile <network>, steps, decode): elapsed time
    and, from the second step on, an estimate of what is left (``pipeline.StageProgress``)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm  # huggingface_hub's dependency: no new requirement

        if done == 0:
            unit = "step" if stage == "steps" else "it"  # updates are seconds apart: show each
            self.bar = tqdm(total=total, desc=stage, file=sys.stderr, unit=unit, mininterval=0)
        else:
            self.bar.update(done - self.bar.n)
        if done == total:
            self.bar.close()


class StageLines:
    """Where stderr is not a terminal (a log): one line as each stage starts, no bars."""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if done == 0:
            print(f"{PROG}: {stage}", file=sys.stderr, flush=True)
