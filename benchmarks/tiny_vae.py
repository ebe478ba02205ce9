"""The tiny VAE's share of compare.py, measured in one process (prints one JSON object).

- ``decoders``: the model's full VAE decoder against the tiny one, per square size, each compiled
  for its shape and timed on the same random latents (median of ``--repeats`` after a warm-up),
  at the device's default precision and, for the tiny one, also with the f32 hint.
- ``previews``: a 512x512 generation with the tiny VAE loaded, without previews and with a
  ``StepInfo.preview()`` in every step's callback, alternated; the previews' own decode seconds
  are timed inside the callback, so ``overhead`` (what previews cost beyond their decodes) is
  ``with - without - preview decodes`` per image, in wall seconds and in CPU seconds of the
  process (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.networks import VAEDecoder
from lcm_lite.models.vae import load_tiny_vae
from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.runtime.compiler import Compiler

PROMPT = "a beautiful pink unicorn, 8k"


def median_seconds(decoder: VAEDecoder, latents: np.ndarray, repeats: int) -> float:
    decoder(latents)  # warm-up
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        decoder(latents)
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def decoders(model: Path, tiny: Path, sizes: list[int], repeats: int) -> dict:
    folder = ModelFolder.open(model)
    tiny_xml = load_tiny_vae(tiny, folder).xml
    default, f32 = Compiler(), Compiler(precision="f32")
    rows = {}
    for size in sizes:
        shape = (1, 4, size // 8, size // 8)
        latents = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        row = {}
        for name, compiler, xml in (
            ("tiny", default, tiny_xml),
            ("tiny_f32", f32, tiny_xml),
            ("full", default, folder.xml("vae_decoder")),
        ):
            decoder = VAEDecoder(compiler, xml, shape, name)
            row[name] = median_seconds(decoder, latents, repeats)
            del decoder
        rows[size] = row
    precision = default.core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    return {"precision": precision.get_type_name(), "seconds": rows}


def previews(model: Path, tiny: Path, steps: int, rounds: int, cache: Path | None) -> dict:
    pipe = LCMPipeline.from_pretrained(model, tiny_vae=tiny, cache_dir=cache)
    preview_seconds: list[tuple[float, float]] = []  # (wall, CPU) of each preview

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def since(start: tuple[float, float]) -> tuple[float, float]:
        now = clocks()
        return now[0] - start[0], now[1] - start[1]

    def preview(info) -> None:
        start = clocks()
        info.preview()
        preview_seconds.append(since(start))

    def image_seconds(callback) -> tuple[float, float]:
        start = clocks()
        pipe(PROMPT, steps=steps, seed=0, callback=callback)
        return since(start)

    image_seconds(preview)  # compiles everything, the tiny decoder included
    preview_seconds.clear()
    without, with_previews = [], []
    for _ in range(rounds):
        without.append(image_seconds(None))
        with_previews.append(image_seconds(preview))
    report: dict[str, float] = {"steps": steps}
    for index, kind in enumerate(("wall", "cpu")):
        plain = statistics.median(t[index] for t in without)
        previewed = statistics.median(t[index] for t in with_previews)
        decodes = sum(t[index] for t in preview_seconds) / rounds
        report[f"image_without_{kind}"] = plain
        report[f"image_with_previews_{kind}"] = previewed
        report[f"preview_decode_per_step_{kind}"] = decodes / steps
        report[f"overhead_per_image_{kind}"] = previewed - plain - decodes
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("tiny_vae", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="images with and without previews")
    parser.add_argument("--cache", type=Path, help="compiled-model cache folder")
    args = parser.parse_args()
    report = {
        "decoders": decoders(args.model, args.tiny_vae, args.sizes, args.repeats),
        "previews": previews(args.model, args.tiny_vae, args.steps, args.rounds, args.cache),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
