"""A quantized folder against its source, in one process: the UNet step time of each, alternated
image by image (the same seeds, so a noisy neighbour slows both alike), and how far quantization
moves the image (PSNR of each seed's image against the source's: with random weights this tells
how far, not how good).

    python benchmarks/quantized.py SOURCE QUANTIZED [--size 512] [--steps 4] [--seeds 3]

Prints JSON. Not a test: nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from lcm_lite import LCMPipeline

PROMPT = "a beautiful pink unicorn, 8k"


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit pictures."""
    mse = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("quantized")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    pipes = {
        name: LCMPipeline.from_pretrained(getattr(args, name)) for name in ("source", "quantized")
    }
    options = {"steps": args.steps, "width": args.size, "height": args.size}
    for pipe in pipes.values():  # compile both before timing
        pipe(PROMPT, seed=0, **options)
    steps: dict[str, list[float]] = {name: [] for name in pipes}
    psnrs = []
    for seed in range(args.seeds):
        images = {}
        for name, pipe in pipes.items():
            result = pipe(f"{PROMPT}, {seed}", seed=seed, **options)
            steps[name] += [v for k, v in result.timings.items() if k.startswith("unet_step_")]
            images[name] = np.asarray(result[0])
        psnrs.append(psnr(images["quantized"], images["source"]))
    medians = {name: statistics.median(seconds) for name, seconds in steps.items()}
    print(
        json.dumps(
            {
                "unet_step": medians,
                "unet_step_ratio": medians["quantized"] / medians["source"],
                "psnr": psnrs,
                "size": args.size,
                "steps": args.steps,
            }
        )
    )


if __name__ == "__main__":
    main()
