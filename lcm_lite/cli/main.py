"""``lcm-lite`` / ``python -m lcm_lite``: generate (the default), info, bench, serve.

Heavy modules (numpy, openvino) are imported inside the commands, so ``--help`` is instant.
Every failure is one line on stderr and an exit code (README: "Exit codes").
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lcm_lite.cli.common import (
    EXIT_TERMINATED,
    PROG,
    Parser,
    Terminated,
    configure_logging,
    integer,
    model_options,
    number,
    open_pipeline,
    raise_on_sigterm,
    timestep_list,
    vae_option,
)
from lcm_lite.errors import Cancelled, LcmLiteError, OutputError, UsageError

COMMANDS = ("generate", "info", "bench", "serve")
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 1


def generate_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Generate images from a text prompt, or from a picture and a prompt.",
        epilog="other commands: lcm-lite info | bench | serve  (each with --help)",
    )
    parser.add_argument(
        "prompt", nargs="?", help="the text prompt (with --image it may be empty: variations)"
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="a file with one prompt a line (models are compiled once)",
    )
    parser.add_argument(
        "--negative-prompt",
        metavar="TEXT",
        help="what to steer away from: Stable Diffusion models with LCM-LoRA, at --guidance > 1",
    )
    parser.add_argument("--steps", type=integer, default=4, help="LCM steps (default 4)")
    parser.add_argument(
        "--guidance",
        type=number,
        default=8.0,
        help="guidance scale, diffusers' convention (default 8.0)",
    )
    parser.add_argument(
        "--seed",
        type=integer,
        help="0 .. 2**64-1, as torch.Generator().manual_seed (default: random)",
    )
    parser.add_argument(
        "--original-inference-steps",
        type=integer,
        help="length of the distillation schedule the steps are taken from (default: the "
        "model's, 50)",
    )
    parser.add_argument(
        "--timesteps",
        type=timestep_list,
        help="custom descending timesteps, e.g. 999,759,499,259 (replaces --steps)",
    )
    parser.add_argument(
        "--image",
        type=Path,
        metavar="FILE",
        help="start from this picture (PNG, JPEG or WebP): image to image",
    )
    parser.add_argument(
        "--strength",
        type=number,
        help="with --image: how much to change it, 0 < X <= 1 (default 0.8)",
    )
    parser.add_argument(
        "--width", type=integer, help="multiple of 8 (default 512, or the --image's width)"
    )
    parser.add_argument(
        "--height", type=integer, help="multiple of 8 (default 512, or the --image's height)"
    )
    parser.add_argument("--num-images", type=integer, default=1, help="images per prompt")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="a .png file or a folder (default: here); never overwrites",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line per image (path, seed, prompt, timings)",
    )
    vae_option(parser)
    model_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "generate"
    raise_on_sigterm()
    try:
        return _COMMANDS[command](argv)
    except LcmLiteError as error:
        if isinstance(error, Cancelled):
            print(f"{PROG}: interrupted", file=sys.stderr)
        else:
            print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as error:  # a bug: still one line, with the way to see the traceback
        if os.environ.get("LCM_LITE_DEBUG"):
            raise
        print(
            f"{PROG}: internal error: {type(error).__name__}: {error} "
            "(set LCM_LITE_DEBUG=1 to see the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


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


def _generate(argv: list[str]) -> int:
    args = generate_parser().parse_args(argv)
    prompts = _read_prompts(args)
    configure_logging(args.quiet)
    from lcm_lite.images.png import save_png
    from lcm_lite.models.hub import DEFAULT_MODEL as default_model
    from lcm_lite.request import check_arguments

    check_arguments(prompts, args.steps, args.guidance, args.width, args.height, args.num_images)
    picture = _check_picture(args)
    if args.seed is not None:
        from lcm_lite.sampling.torch_rng import TorchGenerator

        TorchGenerator(args.seed)  # rejects a seed outside 0 .. 2**64-1 before the model loads
    pipe = open_pipeline(args, keep_models=len(prompts) > 1)
    if not args.quiet and sys.stderr.isatty():
        pipe.progress = _StageBars()
    for prompt in prompts:
        result = pipe(
            prompt,
            **picture,
            negative_prompt=args.negative_prompt,
            steps=args.steps,
            guidance_scale=args.guidance,
            width=args.width,
            height=args.height,
            num_images=args.num_images,
            seed=args.seed,
            original_inference_steps=args.original_inference_steps,
            timesteps=args.timesteps,
            vae=args.vae,
        )
        for index, image in enumerate(result):
            metadata = result.metadata(index, model=args.model or default_model)
            name = prompt or (args.image.stem if args.image else "")
            path = _save_unique(
                save_png, image, _output_path(args, name, result.seed, index), metadata
            )
            if args.json:
                print(
                    json.dumps(
                        {
                            "path": str(path),
                            **metadata,
                            "timings": {k: round(v, 4) for k, v in result.timings.items()},
                        }
                    ),
                    flush=True,
                )
            else:
                print(f"{path}  (seed {result.seed})", flush=True)
    return 0


def _check_picture(args: argparse.Namespace) -> dict[str, object]:
    """The pipeline's image-to-image arguments, the picture and strength checked before the
    model loads; none without ``--image``."""
    if args.image is None:
        if args.strength is not None:
            raise UsageError("--strength needs --image (it says how much to change the picture)")
        return {}
    from lcm_lite.images.preprocess import load_image
    from lcm_lite.request import check_strength

    strength = 0.8 if args.strength is None else args.strength
    check_strength(strength)
    load_image(args.image)
    return {"image": args.image, "strength": strength}


def _output_path(args: argparse.Namespace, prompt: str, seed: int, index: int) -> Path:
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
    suffix = f"-{index}" if args.num_images > 1 else ""
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


class _StageBars:
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


def _info(argv: list[str]) -> int:
    parser = Parser(
        prog=f"{PROG} info",
        description="Describe a model (components, input shapes, devices, cache) "
        "or print the generation settings stored in an lcm-lite PNG.",
    )
    parser.add_argument("image", nargs="?", type=Path, help="a PNG written by lcm-lite")
    model_options(parser)
    args = parser.parse_args(argv)
    if args.image is not None:
        from lcm_lite.cli.remake import remake_command
        from lcm_lite.images.png import read_png_metadata

        if not args.image.is_file():
            raise UsageError(f"no such file: {args.image}")
        try:
            metadata = read_png_metadata(args.image)
        except OSError as error:
            raise UsageError(f"{args.image} is not a PNG image: {error}") from None
        if not metadata:
            raise UsageError(f"{args.image} carries no lcm-lite metadata")
        for key, value in metadata.items():
            print(f"{key}: {value}")
        print(f"remake: {remake_command(metadata)}")
        return 0
    from lcm_lite.cli.info import describe
    from lcm_lite.models.hub import resolve_model
    from lcm_lite.runtime.blob_cache import default_cache_dir

    cache_dir = None if args.no_cache else default_cache_dir()
    print(describe(resolve_model(args.model, args.revision), cache_dir, args.tiny_vae))
    return 0


def _bench(argv: list[str]) -> int:
    from lcm_lite.cli.bench import main as bench_main

    return bench_main(argv)


def _serve(argv: list[str]) -> int:
    from lcm_lite.extras import require_extra
    from lcm_lite.server import EXTRA_MODULES

    require_extra("serve", EXTRA_MODULES, "lcm-lite serve")
    from lcm_lite.cli.serve import main as serve_main

    return serve_main(argv)


_COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "generate": _generate,
    "info": _info,
    "bench": _bench,
    "serve": _serve,
}
