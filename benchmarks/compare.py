"""lcm-lite against raw OpenVINO and openvino_genai, side by side in one run on one model folder.

    python benchmarks/compare.py                      # builds the full-size random model
    python benchmarks/compare.py --model DIR [DIR...] --scan
    python benchmarks/compare.py --quick              # smoke run on a tiny model
    python benchmarks/compare.py --work /work/bench --weights int8 --tiny-vae DIR
    python benchmarks/compare.py --work /work/bench --quantize --calibration-samples 16

With ``--quantize``: ``lcm-lite quantize`` of each folder (its time and peak memory), then the
quantized UNet's step time against the source's, alternated in one process, the PSNR of its images
against the source's (``quantized.py``), and its one-shot CLI (full and tiny VAE) against genai's
one-shot on the source folder.

With the tiny VAE (TAESD; a random one of its architecture is built unless ``--tiny-vae``): its
decode against the full VAE's per size, the one-shot CLI with ``--vae tiny``, the cost of previews
(``tiny_vae.py``).

Every figure comes from a fresh process: wall seconds from start to exit, CPU seconds (user +
system, steadier than wall time on a shared machine) and peak RSS (``wait4``). The lcm-lite
one-shot CLI runs with a warm compiled-model cache (filled by the bench run before it); genai runs
with its defaults, as a user's script would. The one-shots of every kind take turns, ``--rounds``
rounds (3), and each figure is the median of its kind. To see this CPU as one without AMX, run it
under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (oneDNN's cap on the instruction sets it uses; the
report names it). Not a test: nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from machine import VECTOR_FLAGS, cpu_description

from lcm_lite.quantization import DEFAULT_PRESET, PRESETS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VOCAB = REPO.parent / "shared" / "clip-vocab"
PROMPT = "a beautiful pink unicorn, 8k"
TARGETS = {  # ratio name: (at most, what it compares)
    "warm": (1.02, "lcm-lite warm per-image / raw OpenVINO stage sum"),
    "one_shot": (0.70, "lcm-lite one-shot CLI / genai one-shot script (wall)"),
    "one_shot_cpu": (0.70, "the same in CPU seconds (user + system)"),
    "peak_rss": (0.75, "lcm-lite one-shot peak RSS / genai one-shot peak RSS"),
    "tiny_one_shot": (0.50, "lcm-lite one-shot --vae tiny / genai one-shot (wall)"),
    "tiny_one_shot_cpu": (0.50, "the same in CPU seconds (user + system)"),
    "tiny_peak_rss": (0.60, "lcm-lite one-shot --vae tiny peak RSS / genai's"),
    "startup_overhead": (0.30, "start-up overhead (one-shot - raw image): lcm-lite / genai"),
    "quantized_unet_step": (0.75, "quantized UNet step / source UNet step (one process)"),
    "quantized_one_shot": (0.70, "quantized one-shot / genai one-shot on the source (wall)"),
    "quantized_tiny_one_shot": (0.30, "quantized one-shot --vae tiny / genai one-shot (wall)"),
}
HELP_TARGET = 0.3


@dataclass
class Run:
    """One child process: wall and CPU seconds, peak RSS in bytes, its stdout."""

    wall: float
    cpu: float
    peak_rss: int
    stdout: str


def run(command: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``command`` to the end; ``wait4`` gives this child's own CPU time and peak RSS."""
    with tempfile.TemporaryFile("w+") as out:
        clock = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - clock
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if child.returncode:
        raise SystemExit(f"failed ({child.returncode}): {' '.join(command)}\n{stdout}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, stdout)


def build_model(work: Path, size: str, weights: str) -> Path:
    """A random-weight LCM_Dreamshaper_v7-architecture folder (``size="full"``), exported."""
    diffusers_dir, ov_dir = work / f"{size}-diffusers", work / f"{size}-ov-{weights}"
    if not (diffusers_dir / "model_index.json").is_file():
        vocab = ["--vocab", str(VOCAB)] if VOCAB.is_dir() else []
        command = ["-m", "conversion.random_model", str(diffusers_dir), "--size", size, *vocab]
        run([sys.executable, *command])
    if not (ov_dir / "model_index.json").is_file():
        run(
            [
                sys.executable,
                "-m",
                "conversion",
                str(diffusers_dir),
                str(ov_dir),
                "--weights",
                weights,
                "-q",
            ]
        )
    return ov_dir


def build_tiny_vae(work: Path, size: str, weights: str) -> Path:
    """A random-weight AutoencoderTiny of TAESD's architecture (``size="full"``), exported."""
    diffusers_dir, ov_dir = work / f"{size}-taesd", work / f"{size}-taesd-ov-{weights}"
    if not (diffusers_dir / "config.json").is_file():
        command = ["-m", "conversion.random_model", str(diffusers_dir), "--size", size, "--taesd"]
        run([sys.executable, *command])
    if not (ov_dir / "vae_decoder").is_dir():
        command = ["-m", "conversion", str(diffusers_dir), str(ov_dir), "--weights", weights, "-q"]
        run([sys.executable, *command])
    return ov_dir


def help_seconds(times: int = 5) -> float:
    """Median wall time of ``python -m lcm_lite --help``."""
    return statistics.median(
        run([sys.executable, "-m", "lcm_lite", "--help"]).wall for _ in range(times)
    )


def cache_env(model: Path, work: Path) -> dict[str, str]:
    """The environment giving every lcm-lite run on ``model`` one compiled-model cache."""
    return {"LCM_LITE_CACHE": str(work / f"cache-{model.name}")}


def one_shot(model: Path, size: int, steps: int, out: Path, env: dict[str, str], *extra: str):
    """``python -m lcm_lite PROMPT`` on ``model``, as a user runs it once."""
    size_args = ["--steps", str(steps), "--width", str(size), "--height", str(size)]
    command = [sys.executable, "-m", "lcm_lite", PROMPT, "--model", str(model), "--seed", "42"]
    return run([*command, *size_args, "--out", str(out), "-q", *extra], env)


def median_run(runs: list[Run]) -> Run:
    """The median wall seconds, CPU seconds and peak RSS of one command's runs."""
    return Run(
        statistics.median(r.wall for r in runs),
        statistics.median(r.cpu for r in runs),
        int(statistics.median(r.peak_rss for r in runs)),
        runs[-1].stdout,
    )


def alternated(commands: dict[str, Callable[[], Run]], rounds: int) -> dict[str, Run]:
    """Each command's median run over ``rounds`` rounds, the commands taking turns in each
    round, so that a change in the machine's load falls on every command alike."""
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            runs[name].append(command())
    return {name: median_run(done) for name, done in runs.items()}


def compare(
    model: Path,
    size: int,
    steps: int,
    images: int,
    work: Path,
    tiny: Path | None,
    calibration_samples: int | None = None,
    rounds: int = 3,
    preset: str = DEFAULT_PRESET,
) -> dict:
    """All measurements for one folder, in one run; returns figures and ratios. With
    ``calibration_samples``, also those of the folder ``lcm-lite quantize`` makes of it. The
    one-shots (lcm-lite's with each VAE and folder, genai's) are alternated, ``rounds`` each."""
    cache = cache_env(model, work)
    python = sys.executable
    bench = bench_rows(model, [str(size)], [str(steps)], images, cache)[0]
    raw = json.loads(
        run(
            [
                python,
                str(HERE / "raw_openvino.py"),
                str(model),
                "--size",
                str(size),
                "--steps",
                str(steps),
                "--repeats",
                "1",
                "--cache",
                str(work / f"ov-cache-{model.name}"),
            ]
        ).stdout
    )
    genai_args = [python, str(HERE / "genai_run.py"), str(model)]
    size_args = ["--size", str(size), "--steps", str(steps)]
    one_shots: dict[str, Callable[[], Run]] = {
        "lcm-lite": lambda: one_shot(model, size, steps, work / f"lcm-{model.name}.png", cache),
        "genai": lambda: run([*genai_args, str(work / f"genai-{model.name}.png"), *size_args]),
    }
    tiny_args = ["--vae", "tiny", "--tiny-vae", str(tiny)] if tiny is not None else []
    if tiny is not None:
        tiny_bench = bench_rows(model, [str(size)], [str(steps)], images, cache, *tiny_args)[0]
        out = work / f"lcm-lite-tiny-{model.name}.png"
        one_shots["lcm-lite tiny"] = lambda: one_shot(model, size, steps, out, cache, *tiny_args)
    quantized = None
    if calibration_samples is not None:
        quantized, quantized_one_shots = quantized_folder(
            model, size, steps, work, calibration_samples, tiny_args, preset
        )
        one_shots.update(quantized_one_shots)
    medians = alternated(one_shots, rounds)
    lcm_lite, genai_one_shot = medians["lcm-lite"], medians["genai"]
    genai_warm = json.loads(
        run(
            [
                *genai_args,
                str(work / f"genai-warm-{model.name}.png"),
                *size_args,
                "--images",
                str(images),
            ]
        ).stdout
    )["image_seconds"]
    figures = {
        "raw_text_encoder": raw["text_encoder"],
        "raw_unet_step": raw["unet"],
        "raw_vae_decoder": raw["vae_decoder"],
        "raw_image": raw["image"],
        "lcm_lite_warm_image": bench["steady_image"],
        "lcm_lite_first_image": bench["first_image"],
        "lcm_lite_one_shot_wall": lcm_lite.wall,
        "lcm_lite_one_shot_cpu": lcm_lite.cpu,
        "lcm_lite_one_shot_peak_rss": lcm_lite.peak_rss,
        "genai_warm_image": statistics.median(genai_warm[1:]),
        "genai_first_image": genai_warm[0],
        "genai_one_shot_wall": genai_one_shot.wall,
        "genai_one_shot_cpu": genai_one_shot.cpu,
        "genai_one_shot_peak_rss": genai_one_shot.peak_rss,
        "one_shot_rounds": rounds,
    }
    ratios = {
        "warm": figures["lcm_lite_warm_image"] / figures["raw_image"],
        "one_shot": lcm_lite.wall / genai_one_shot.wall,
        "one_shot_cpu": lcm_lite.cpu / genai_one_shot.cpu,
        "peak_rss": lcm_lite.peak_rss / genai_one_shot.peak_rss,
        "startup_overhead": (lcm_lite.wall - raw["image"]) / (genai_one_shot.wall - raw["image"]),
    }
    result = {"model": str(model), "precision": raw["precision"], "bench": bench}
    if quantized is not None:
        quantized["one_shot_wall"] = medians["quantized"].wall
        ratios["quantized_unet_step"] = quantized["unet_step_ratio"]
        ratios["quantized_one_shot"] = medians["quantized"].wall / genai_one_shot.wall
        if tiny is not None:
            quantized["tiny_one_shot_wall"] = medians["quantized tiny"].wall
            ratios["quantized_tiny_one_shot"] = medians["quantized tiny"].wall / genai_one_shot.wall
        result["quantized"] = quantized
    if tiny is not None:
        tiny_one_shot = medians["lcm-lite tiny"]
        figures.update(
            lcm_lite_tiny_warm_image=tiny_bench["steady_image"],
            lcm_lite_tiny_one_shot_wall=tiny_one_shot.wall,
            lcm_lite_tiny_one_shot_cpu=tiny_one_shot.cpu,
            lcm_lite_tiny_one_shot_peak_rss=tiny_one_shot.peak_rss,
        )
        ratios.update(
            tiny_one_shot=tiny_one_shot.wall / genai_one_shot.wall,
            tiny_one_shot_cpu=tiny_one_shot.cpu / genai_one_shot.cpu,
            tiny_peak_rss=tiny_one_shot.peak_rss / genai_one_shot.peak_rss,
        )
        command = [python, str(HERE / "tiny_vae.py"), str(model), str(tiny), "--steps", str(steps)]
        result["tiny_vae"] = json.loads(run([*command, "--cache", cache["LCM_LITE_CACHE"]]).stdout)
    return {**result, "figures": figures, "ratios": ratios}


def quantized_folder(
    model: Path,
    size: int,
    steps: int,
    work: Path,
    calibration_samples: int,
    tiny_args: list[str],
    preset: str,
) -> tuple[dict, dict[str, Callable[[], Run]]]:
    """``lcm-lite quantize --preset PRESET`` of ``model`` (timed; reused if it exists): its
    figures (its UNet step against the source's and its images' PSNR, ``quantized.py``), and,
    its compiled-model cache filled, its one-shot CLI with each VAE as commands to alternate
    (``tiny_args``: the tiny one's options)."""
    quantized = work / f"{model.name}-quantized{'' if preset == DEFAULT_PRESET else '-' + preset}"
    figures: dict = {"folder": str(quantized), "preset": preset}
    if not (quantized / "model_index.json").is_file():
        command = [sys.executable, "-m", "lcm_lite", "quantize", str(model), str(quantized)]
        options = ["--samples", str(calibration_samples), "--size", str(size), "--steps"]
        made = run([*command, *options, str(steps), "--preset", preset, "-q"])
        figures.update(quantize_wall=made.wall, quantize_peak_rss=made.peak_rss)
    figures["calibration_samples"] = calibration_samples
    command = [sys.executable, str(HERE / "quantized.py"), str(model), str(quantized)]
    figures.update(json.loads(run([*command, "--size", str(size), "--steps", str(steps)]).stdout))
    cache = cache_env(quantized, work)
    bench_rows(quantized, [str(size)], [str(steps)], 1, cache)  # fills the compiled cache
    out = work / f"lcm-lite-{quantized.name}.png"
    one_shots = {"quantized": lambda: one_shot(quantized, size, steps, out, cache)}
    if tiny_args:
        bench_rows(quantized, [str(size)], [str(steps)], 1, cache, *tiny_args)
        tiny_out = work / f"lcm-lite-tiny-{quantized.name}.png"
        one_shots["quantized tiny"] = lambda: one_shot(
            quantized, size, steps, tiny_out, cache, *tiny_args
        )
    return figures, one_shots


def scan(model: Path, work: Path) -> list[dict]:
    """Time per image against steps (512) and size (4 steps), and peak memory per size, from
    ``lcm-lite bench`` (all three networks held, as a server does)."""
    cache = cache_env(model, work)
    rows = []
    for sizes, steps in ((["512"], ["1", "2", "4", "8"]), (["256", "512", "768"], ["4"])):
        rows += bench_rows(model, sizes, steps, 1, cache)
    return rows


def bench_rows(
    model: Path, sizes: list[str], steps: list[str], images: int, env: dict[str, str], *extra: str
) -> list[dict]:
    """The rows of ``lcm-lite bench --json`` run in a fresh process."""
    command = [
        sys.executable,
        "-m",
        "lcm_lite",
        "bench",
        "--model",
        str(model),
        "--sizes",
        *sizes,
        "--steps",
        *steps,
        "--images",
        str(images),
        "--json",
        *extra,
    ]
    return json.loads(run(command, env).stdout)["rows"]


def format_report(results: list[dict], help_time: float, scans: list[dict]) -> str:
    cpu, flags = cpu_description()
    lines = [
        f"cpu {cpu}  flags {' '.join(flags) or 'none of ' + ' '.join(VECTOR_FLAGS)}",
        f"python -m lcm_lite --help: {help_time:.3f} s  (target < {HELP_TARGET} s: "
        f"{'met' if help_time < HELP_TARGET else 'NOT met'})",
    ]
    for result in results:
        f = result["figures"]
        gib = 2**30
        lines += [
            "",
            f"model {result['model']}  (inference precision {result['precision']})",
            f"  raw OpenVINO      text encoder {f['raw_text_encoder']:.3f} s, "
            f"UNet {f['raw_unet_step']:.2f} s/step, VAE decoder {f['raw_vae_decoder']:.2f} s, "
            f"image {f['raw_image']:.2f} s",
            f"  lcm-lite          warm image {f['lcm_lite_warm_image']:.2f} s, "
            f"first image (cold cache) {f['lcm_lite_first_image']:.2f} s",
            f"  one-shots: medians of {f['one_shot_rounds']}, each kind in turn",
            f"  lcm-lite one-shot {f['lcm_lite_one_shot_wall']:.2f} s wall, "
            f"{f['lcm_lite_one_shot_cpu']:.2f} s CPU, "
            f"peak RSS {f['lcm_lite_one_shot_peak_rss'] / gib:.2f} GiB",
            f"  genai             warm image {f['genai_warm_image']:.2f} s, "
            f"first image {f['genai_first_image']:.2f} s",
            f"  genai one-shot    {f['genai_one_shot_wall']:.2f} s wall, "
            f"{f['genai_one_shot_cpu']:.2f} s CPU, "
            f"peak RSS {f['genai_one_shot_peak_rss'] / gib:.2f} GiB",
        ]
        if "tiny_vae" in result:
            lines += tiny_vae_lines(f, result["tiny_vae"])
        if "quantized" in result:
            lines += quantized_lines(result["quantized"])
        lines.append(f"  {'ratio':<58} {'value':>6} {'target':>7}")
        for name, value in result["ratios"].items():
            limit, label = TARGETS[name]
            verdict = "met" if value <= limit else "NOT met"
            lines.append(f"  {label:<58} {value:>6.3f} {'<= ' + str(limit):>7}  {verdict}")
    if scans:
        lines += [
            "",
            f"{'size':>9} {'steps':>5} {'image s':>8} {'UNet s/step':>11} "
            f"{'VAE s':>6} {'peak GiB':>8} {'anon GiB':>8}",
        ]
        for row in scans:
            image = row["first_image"] - sum(row["compile"].values())
            lines.append(
                f"{row['width']:>4}x{row['height']:<4} {row['steps']:>5} {image:>8.2f} "
                f"{statistics.mean(row['unet_steps']):>11.2f} {row['vae_decoder']:>6.2f} "
                f"{row['peak_rss'] / 2**30:>8.2f} {row['peak_anon_rss'] / 2**30:>8.2f}"
            )
    return "\n".join(lines)


def quantized_lines(q: dict) -> list[str]:
    made = (
        f"made in {q['quantize_wall']:.0f} s, peak RSS {q['quantize_peak_rss'] / 2**30:.2f} GiB"
        if "quantize_wall" in q
        else "reused"
    )
    tiny = f", --vae tiny {q['tiny_one_shot_wall']:.2f} s" if "tiny_one_shot_wall" in q else ""
    psnr = ", ".join(f"{value:.1f}" for value in q["psnr"])
    return [
        f"  quantized         {q['folder']} ({q['calibration_samples']} samples, preset "
        f"{q['preset']}; {made})",
        f"    UNet step {q['unet_step']['quantized']:.3f} s vs source "
        f"{q['unet_step']['source']:.3f} s (alternated); PSNR vs source {psnr} dB",
        f"    one-shot {q['one_shot_wall']:.2f} s wall{tiny}",
    ]


def tiny_vae_lines(f: dict, tiny: dict) -> list[str]:
    decoders, previews = tiny["decoders"], tiny["previews"]
    lines = [
        f"  lcm-lite --vae tiny  warm image {f['lcm_lite_tiny_warm_image']:.2f} s; one-shot "
        f"{f['lcm_lite_tiny_one_shot_wall']:.2f} s wall, {f['lcm_lite_tiny_one_shot_cpu']:.2f} s "
        f"CPU, peak RSS {f['lcm_lite_tiny_one_shot_peak_rss'] / 2**30:.2f} GiB",
        f"  decode seconds (default precision {decoders['precision']}; tiny also with f32):",
    ]
    for size, row in decoders["seconds"].items():
        lines.append(
            f"    {size}x{size}: full {row['full']:.3f}, tiny {row['tiny']:.4f} "
            f"(f32 {row['tiny_f32']:.4f}), full/tiny {row['full'] / row['tiny']:.1f}x"
        )
    for kind in ("wall", "cpu"):
        lines.append(
            f"  previews, {kind} s ({previews['steps']} steps): image "
            f"{previews[f'image_without_{kind}']:.2f} without, "
            f"{previews[f'image_with_previews_{kind}']:.2f} with; a preview decode "
            f"{previews[f'preview_decode_per_step_{kind}']:.3f}/step; cost beyond the decodes "
            f"{previews[f'overhead_per_image_{kind}']:+.3f}/image"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="+", help="OpenVINO model folder(s)")
    parser.add_argument(
        "--weights", nargs="+", default=["fp16"], help="weights of the built model(s) (fp16 int8)"
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=2, help="images for warm timings (>= 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="one-shot runs of each kind, alternated (median)"
    )
    parser.add_argument("--scan", action="store_true", help="also scan steps 1-8, sizes 256-768")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 64x64")
    parser.add_argument("--work", type=Path, help="folder for built models, caches and images")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    parser.add_argument(
        "--tiny-vae", type=Path, help="tiny-VAE folder (default: build a random TAESD)"
    )
    parser.add_argument("--no-tiny-vae", action="store_true", help="skip the tiny-VAE figures")
    parser.add_argument(
        "--quantize", action="store_true", help="also quantize each folder and compare it"
    )
    parser.add_argument(
        "--calibration-samples", type=int, default=64, help="lcm-lite quantize --samples"
    )
    parser.add_argument(
        "--quantize-preset",
        choices=PRESETS,
        default=DEFAULT_PRESET,
        help="lcm-lite quantize --preset",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lcm-lite-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.size, args.steps = 64, 2
    models = args.model or [
        build_model(work, "tiny" if args.quick else "full", weights) for weights in args.weights
    ]
    tiny = None
    if not args.no_tiny_vae:
        tiny = args.tiny_vae or build_tiny_vae(work, "tiny" if args.quick else "full", "fp16")
    help_time = help_seconds()
    samples = args.calibration_samples if args.quantize else None
    results = [
        compare(
            m,
            args.size,
            args.steps,
            max(args.images, 2),
            work,
            tiny,
            samples,
            args.rounds,
            args.quantize_preset,
        )
        for m in models
    ]
    scans = scan(models[0], work) if args.scan and not args.quick else []
    print(format_report(results, help_time, scans))
    if args.json:
        args.json.write_text(json.dumps({"help": help_time, "results": results, "scan": scans}))


if __name__ == "__main__":
    main()
