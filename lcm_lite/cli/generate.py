"""``lcm-lite [generate] PROMPT``: images from a prompt (or a prompts file, or a picture), saved
as PNGs with their metadata. Its options are ``Request``'s fields (``request.Request``) and the
model's (``request.LoadOptions``), derived from their declarations."""

from __future__ import annotations

import argparse
import codecs
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from lcm_lite.cli.common import (
    PROG,
    Parser,
    StageBars,
    add_options,
    configure_logging,
    given,
    model_options,
    open_pipeline,
)
from lcm_lite.errors import OutputError, UsageError
from lcm_lite.fields import specs
from lcm_lite.request import Request


def generate_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Generate images from a text prompt, or from a picture and a prompt.",
        epilog="other commands: lcm-lite info | bench | serve | mcp  (each with --help)",
    )
    parser.add_argument("prompt", nargs="?", help=specs(Request)["prompt"].help)
    parser.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="a file with one prompt a line (models are compiled once)",
    )
    add_options(parser, Request)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="a .png file or a folder (default: here); never overwrites",
    )
    parser.add_argument(
        "--save-control",
        action="store_true",
        help="also save the control picture each ControlNet saw (after --control-preprocess) "
        "next to the image, as <image>-control.png",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line per image (path, seed, prompt, timings)",
    )
    model_options(parser)
    return parser


def generate(argv: list[str]) -> int:
    args = generate_parser().parse_args(argv)
    prompts = _read_prompts(args)
    configure_logging(args.quiet)
    from lcm_lite.images.png import save_png
    from lcm_lite.models.hub import DEFAULT_MODEL

    requests = [Request(prompt, **given(args, Request)) for prompt in prompts]
    for request in requests:
        _check_before_loading(request, args)
    pipe = open_pipeline(args, keep_models=len(prompts) > 1)
    progress = StageBars() if not args.quiet and sys.stderr.isatty() else None
    for request in requests:
        result = pipe.generate(request, progress=progress)
        for index, image in enumerate(result):
            metadata = result.metadata(index, model=args.model or DEFAULT_MODEL)
            name = request.prompt or (args.image.stem if args.image else "")
            path = _save_unique(
                save_png,
                image,
                _output_path(args, name, result.seed, index, request.num_images),
                metadata,
            )
            if args.save_control:
                _save_control_pictures(path, result.control_images)
            if args.json:
                timings = {k: round(v, 4) for k, v in result.timings.items()}
                print(json.dumps({"path": str(path), **metadata, "timings": timings}), flush=True)
            else:
                print(f"{path}  (seed {result.seed})", flush=True)
    return 0


def _check_before_loading(request: Request, args: argparse.Namespace) -> None:
    """What can be refused before the model loads: the request's own checks, an option given
    without the one it needs (``--strength`` without ``--image``), the picture and its mask."""
    for name, field_spec in specs(Request).items():
        needed = field_spec.needs
        if needed and getattr(args, name, None) is not None and getattr(args, needed) is None:
            raise UsageError(f"{field_spec.flag} needs {specs(Request)[needed].flag}")
    request.check()
    controlnets, control_images = len(args.controlnet or []), len(args.control_image or [])
    if controlnets and not control_images:
        raise UsageError(
            "the ControlNets need a control picture each: --control-image FILE (one per "
            "--controlnet)"
        )
    if control_images and control_images != controlnets:
        raise UsageError(
            f"--control-image given {control_images} time(s) for {controlnets} --controlnet: "
            "give one control picture per ControlNet"
        )
    if args.save_control and not control_images:
        raise UsageError("--save-control needs --control-image")
    from lcm_lite.images.preprocess import load_image

    for control in args.control_image or []:
        load_image(control)
    if request.image is not None:
        picture = load_image(request.image)
        if request.mask_image is not None:
            from lcm_lite.images.mask import check_aspect_ratio

            check_aspect_ratio(load_image(request.mask_image), picture)


def _save_control_pictures(image_path: Path, pictures: list[object]) -> None:
    """Each control picture as ``<image>-control.png`` (``-control-2.png``, ... for several),
    never overwriting."""
    from lcm_lite.images.png import save_png

    for number, picture in enumerate(pictures, start=1):
        suffix = "" if number == 1 else f"-{number}"
        _save_unique(
            save_png, picture, image_path.with_name(f"{image_path.stem}-control{suffix}.png"), {}
        )


def _read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt is None and args.prompts is None and args.image is not None:
        return [""]  # variations of the picture
    if (args.prompt is None) == (args.prompts is None):
        raise UsageError("give a prompt, or --prompts FILE (one of the two)")
    if args.prompts is None:
        return [args.prompt]
    lines = _prompt_lines(args.prompts)
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise UsageError(f"{args.prompts} has no prompts")
    return prompts


def _prompt_lines(path: Path) -> list[str]:
    """The lines of a ``--prompts`` file: UTF-8, with or without a byte-order mark (Windows
    Notepad writes one; it is not part of the first prompt). UTF-16 and UTF-32 are refused."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read prompts from {path}: {error.strerror}") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        raise UsageError(
            f"{path} is UTF-16 or UTF-32 text: save it as UTF-8 (with or without a BOM)"
        )
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8"
        ) from None


def _output_path(
    args: argparse.Namespace, prompt: str, seed: int, index: int, num_images: int
) -> Path:
    """``--out`` as a file if it ends in .png, else as a folder of ``<prompt words>-<seed>.png``
    (the picture's name for variations of it)."""
    is_file = args.out.suffix.lower() == ".png"
    folder = args.out.parent if is_file else args.out
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {folder}: {error.strerror}") from None
    if is_file:
        return args.out
    slug = "-".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:48].strip("-") or "image"
    suffix = f"-{index}" if num_images > 1 else ""
    return args.out / f"{slug}-{seed}{suffix}.png"


def _save_unique(
    save: Callable[..., None], image: object, path: Path, metadata: dict[str, object]
) -> Path:
    """Save under ``path`` or, if taken, the first free ``stem-N.png``; never overwrite."""
    from lcm_lite.images.png import unique_path

    while True:
        candidate = unique_path(path)
        try:
            save(image, candidate, metadata)
            return candidate
        except OutputError:
            if not candidate.exists():
                raise  # a real write failure, not a name taken in the meantime
