"""``lcm-lite bench``: where the time and the memory of a generation go, on this device.

For each size: compile (or import from the cache) time per network; then for each step count:
the first image and the steady state, split into tokenize, text encoder, each UNet step and the
VAE decoder; the peak resident memory (``VmHWM``, reset per size through ``/proc/self/clear_refs``)
and the peak anonymous memory (``RssAnon``, sampled), which excludes file-backed weights. The report
names the device and the precision of each stage (``--device`` may give one per stage).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lcm_lite.cli.common import (
    PROG,
    Parser,
    add_options,
    configure_logging,
    given,
    integer,
    model_options,
    open_pipeline,
)
from lcm_lite.request import Request

PROMPT = "a beautiful pink unicorn, 8k"
SAMPLE_SECONDS = 0.05


@dataclass
class Row:
    """One (size, steps) measurement; times in seconds, memory in bytes."""

    width: int
    height: int
    steps: int
    images: int
    compile: dict[str, float]
    first_image: float
    steady_image: float | None
    tokenize: float
    text_encoder: float
    unet_steps: list[float]
    vae_decoder: float
    peak_rss: int
    peak_anon_rss: int
    timings: list[dict[str, float]] = field(repr=False)


def bench_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} bench",
        description="Time each stage of a generation and measure peak memory, per size and step "
        "count. The first image of a size includes compiling (or importing from the cache).",
    )
    parser.add_argument(
        "--sizes", type=integer, nargs="+", default=[512], help="square sizes (default 512)"
    )
    parser.add_argument(
        "--steps", type=integer, nargs="+", default=[4], help="step counts (default 4)"
    )
    parser.add_argument(
        "--images",
        type=integer,
        default=3,
        help="images per size and step count; the first is the cold one (default 3)",
    )
    parser.add_argument("--prompt", default=PROMPT, help="the prompt (default: a fixed one)")
    parser.add_argument("--seed", type=integer, default=0, help="noise seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object, no table")
    add_options(parser, Request, only=["vae"])
    model_options(parser)
    return parser


def main(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    configure_logging(args.quiet)
    check_bench_arguments(args)
    clock = time.perf_counter()
    pipe = open_pipeline(args, keep_models=True)
    stages = _stages(pipe)
    report = {
        "model": str(pipe.folder.root),
        "device": pipe.compiler.device,
        "precision": _joined({stage: s["precision"] for stage, s in stages.items()}),
        "stages": stages,
        "vae": Request(args.prompt, **given(args, Request, only=["vae"])).vae,
        "cache": pipe.compiler.cache_dir is not None,
        "open_seconds": round(time.perf_counter() - clock, 4),
        **_versions(),
        "rows": [asdict(row) for row in _measure(pipe, args)],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
    return 0


def check_bench_arguments(args: argparse.Namespace) -> None:
    """Refuse, before the model loads, what ``generate`` refuses: every size and step count as
    the pipeline checks them, the seed as ``TorchGenerator`` does, and at least one image."""
    from lcm_lite.errors import UsageError

    if args.images < 1:
        raise UsageError(f"--images must be at least 1, got {args.images}")
    for size in args.sizes:
        for steps in args.steps:
            Request(args.prompt, steps=steps, width=size, height=size, seed=args.seed).check()


def _measure(pipe, args: argparse.Namespace) -> Iterator[Row]:
    """Sizes in the order given; the peak memory of a size is measured from its first image."""
    for size in args.sizes:
        _reset_peak_rss()
        with _AnonSampler() as anon:
            for steps in args.steps:
                timings, walls = [], []
                for index in range(args.images):
                    # a new prompt each image, so the text encoder runs (a repeated prompt's
                    # encoding is reused by the pipeline)
                    prompt = f"{args.prompt}, {size} {steps} {index}"
                    clock = time.perf_counter()
                    request = Request(prompt, **given(args, Request, only=["vae"]))
                    result = pipe.generate(
                        replace(request, steps=steps, width=size, height=size, seed=args.seed)
                    )
                    walls.append(time.perf_counter() - clock)
                    timings.append(result.timings)
                yield _row(size, steps, timings, walls, _peak_rss(), anon.peak)


def _row(
    size: int,
    steps: int,
    timings: list[dict[str, float]],
    walls: list[float],
    peak_rss: int,
    peak_anon_rss: int,
) -> Row:
    """Stage times from the steady images (the first one's if it is the only one)."""
    steady = timings[1:] or timings

    def median(key: str) -> float:
        return statistics.median(t[key] for t in steady)

    return Row(
        width=size,
        height=size,
        steps=steps,
        images=len(walls),
        compile={k.removeprefix("compile_"): v for k, v in timings[0].items() if "compile" in k},
        first_image=walls[0],
        steady_image=statistics.median(walls[1:]) if len(walls) > 1 else None,
        tokenize=median("tokenize"),
        text_encoder=median("text_encoder"),
        unet_steps=[median(f"unet_step_{i + 1}") for i in range(steps)],
        vae_decoder=median("vae_decoder"),
        peak_rss=peak_rss,
        peak_anon_rss=peak_anon_rss,
        timings=timings,
    )


def format_table(report: dict) -> str:
    """The human table: one line per (size, steps), seconds unless marked, memory in GiB."""
    header = (
        f"{'size':>9} {'steps':>5} {'compile':>8} {'first':>7} {'steady':>7} "
        f"{'tok ms':>6} {'text':>6} {'unet/step':>9} {'vae':>6} {'peak GiB':>8} {'anon GiB':>8}"
    )
    lines = [
        f"model {report['model']}  vae {report['vae']}  device {report['device']}  "
        f"precision {report['precision']}  "
        f"cache {'on' if report['cache'] else 'off'}  openvino {report['openvino']}",
        header,
    ]
    for row in report["rows"]:
        steady = row["steady_image"]
        lines.append(
            f"{row['width']:>4}x{row['height']:<4} {row['steps']:>5} "
            f"{sum(row['compile'].values()):>8.2f} {row['first_image']:>7.2f} "
            f"{'-' if steady is None else f'{steady:.2f}':>7} {row['tokenize'] * 1000:>6.1f} "
            f"{row['text_encoder']:>6.3f} {statistics.mean(row['unet_steps']):>9.3f} "
            f"{row['vae_decoder']:>6.2f} {row['peak_rss'] / 2**30:>8.2f} "
            f"{row['peak_anon_rss'] / 2**30:>8.2f}"
        )
    return "\n".join(lines)


def _stages(pipe) -> dict[str, dict[str, str]]:
    """Each stage's device and inference precision: ``{"unet": {"device": "GPU", "precision":
    "f16"}, ...}``."""
    return {
        stage: {"device": device, "precision": _precision(pipe.compiler.for_stage(stage))}
        for stage, device in pipe.compiler.devices.as_dict().items()
    }


def _joined(by_stage: dict[str, str]) -> str:
    """One value when every stage has it (``f32``), else ``text_encoder=f32,unet=f16,...``."""
    if len(set(by_stage.values())) == 1:
        return next(iter(by_stage.values()))
    return ",".join(f"{stage}={value}" for stage, value in by_stage.items())


def _precision(compiler) -> str:
    """The inference precision ``compiler``'s device uses: the hint given, else the device's
    default; a virtual device's (AUTO:GPU,CPU) is the defaults of the devices it lists ("bf16",
    "f16/bf16"), "device default" where nothing says."""
    from lcm_lite.runtime.compiler import listed_devices

    if "INFERENCE_PRECISION_HINT" in compiler.config:
        return compiler.config["INFERENCE_PRECISION_HINT"]
    devices = listed_devices(compiler.device)
    if devices != [compiler.device]:
        defaults = [_default_precision(compiler.core, d) for d in devices if d[0] != "-"]
        known = list(dict.fromkeys(d for d in defaults if d is not None))
        return "/".join(known) if known else "device default"
    return _default_precision(compiler.core, compiler.device) or "device default"


def _default_precision(core, device: str) -> str | None:
    """``device``'s default inference precision; None if it does not say."""
    try:
        hint = core.get_property(device, "INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return None
    return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)


def _versions() -> dict[str, str]:
    import openvino

    from lcm_lite import __version__

    return {"lcm_lite": __version__, "openvino": openvino.get_version(), "python": sys.version}


def _status(field_name: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (0 where there is no procfs)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); elsewhere a no-op."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss() -> int:
    return _status("VmHWM")


class _AnonSampler:
    """The peak of ``RssAnon`` while the block runs, sampled every ``SAMPLE_SECONDS``."""

    def __init__(self) -> None:
        self.peak = _status("RssAnon")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, _status("RssAnon"))

    def __enter__(self) -> _AnonSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))
