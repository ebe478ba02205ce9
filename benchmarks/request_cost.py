"""What a request's pictures cost, side by side in one process (prints JSON).

One pipeline (with ``--controlnet``, loaded with it) makes the same prompt and seed in turn, round
after round, so that a shared machine's load falls on every variant alike:

- ``text``: text to image;
- ``image``: image to image (``--strength``) from a made-up picture;
- ``inpaint``: the same, repainting a centred square mask (the model's own UNet: 4 channels, the
  picture noised back outside the mask after each step; a 9-channel model: its input);
- ``control`` (with ``--controlnet``): text to image steered by the ControlNet, the control
  picture the picture's Canny edges.

Per variant: the UNet steps that ran, the median UNet step and VAE-encoder seconds (the first
round compiles and is left out), the median whole image, and the ratios that answer the questions
(an inpainting step against an image-to-image step; a ControlNet + UNet step against the UNet's).
Then each variant once more in a fresh process of its own (``--only``), loaded with only what it
needs, from the warm compiled-model cache: its peak RSS (the child's own ``VmHWM``), as a one-shot
run has it.
Also the CPU, its vector flags, OpenVINO's version and the UNet's precision as compiled.

    python benchmarks/request_cost.py --model FULL_OV_DIR --controlnet FULL_CONTROLNET_OV_DIR \\
        --rounds 3 --cache /tmp/request-cost-cache
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import openvino as ov
from compare import run
from machine import cpu_description
from PIL import Image, ImageDraw

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

PROMPT = "a beautiful pink unicorn, 8k"


def picture(size: int) -> Image.Image:
    """A made-up photo: a colour gradient with a few shapes, so that Canny finds edges."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), -1)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(250, 240, 20))
    draw.rectangle((size // 2, size // 3, 7 * size // 8, 7 * size // 8), fill=(20, 30, 200))
    return image


def centred_square_mask(size: int) -> Image.Image:
    """White (repaint) on the centre half of each side, black elsewhere."""
    mask = Image.new("L", (size, size), 0)
    low, high = size // 4, 3 * size // 4 - 1
    ImageDraw.Draw(mask).rectangle((low, low, high, high), 255)
    return mask


def variants(size: int, strength: float, controlnet: bool) -> dict[str, dict]:
    """Each variant's request fields beyond the prompt, seed, size and steps."""
    photo = picture(size)
    chosen = {
        "text": {},
        "image": {"image": photo, "strength": strength},
        "inpaint": {"image": photo, "mask_image": centred_square_mask(size), "strength": strength},
    }
    if controlnet:
        chosen["control"] = {"control_image": photo, "control_preprocess": "canny"}
    return chosen


def load(args: argparse.Namespace, controlnet: bool) -> LCMPipeline:
    return LCMPipeline.from_pretrained(
        args.model,
        precision=args.precision,
        cache_dir=args.cache,
        controlnet=args.controlnet if controlnet else None,
    )


def side_by_side(args: argparse.Namespace) -> dict:
    """Every variant in turn, ``rounds`` + 1 times, in this process; round 0 compiles."""
    pipe = load(args, args.controlnet is not None)
    chosen = variants(args.size, args.strength, args.controlnet is not None)
    seconds: dict[str, dict[str, list[float]]] = {
        name: {"unet_step": [], "vae_encoder": [], "image": []} for name in chosen
    }
    steps_run = {}
    for round_index in range(args.rounds + 1):
        for name, fields in chosen.items():
            result = pipe(PROMPT, seed=1, **fields, **shape(args))
            steps_run[name] = len(result.settings.timesteps)
            if round_index == 0:
                continue
            timings = result.timings
            steps = [v for k, v in timings.items() if k.startswith("unet_step_")]
            seconds[name]["unet_step"] += steps
            seconds[name]["vae_encoder"].append(timings.get("vae_encoder", 0.0))
            seconds[name]["image"].append(sum(v for k, v in timings.items() if "compile" not in k))
    unet = next(network for key, network in pipe._networks._held.items() if key[0] == "unet")
    precision = unet.compiled.get_property("INFERENCE_PRECISION_HINT")
    medians = {
        name: {f"{what}_median_s": round(statistics.median(v), 3) for what, v in by.items()}
        for name, by in seconds.items()
    }
    for name in medians:
        medians[name]["unet_steps_run"] = steps_run[name]

    def step_ratio(name: str, against: str) -> float:
        step, other = medians[name]["unet_step_median_s"], medians[against]["unet_step_median_s"]
        return round(step / other, 3)

    ratios = {"inpaint_step_over_image_step": step_ratio("inpaint", "image")}
    if "control" in medians:
        ratios["control_step_over_text_step"] = step_ratio("control", "text")
    return {
        "inference_precision": precision.get_type_name(),
        "variants": medians,
        "ratios": ratios,
    }


def shape(args: argparse.Namespace) -> dict:
    return {"steps": args.steps, "width": args.size, "height": args.size}


def peak_memory(args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    """Each variant's one image in a fresh process: its peak RSS in GiB, as the child reads it
    (``wait4``'s would count the pages the child shared with this big parent before its exec)."""
    peaks = {}
    for name in names:
        command = [sys.executable, __file__, "--only", name, *sys.argv[1:]]
        peaks[name] = round(int(run(command).stdout) / 2**30, 2)
    return peaks


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux: ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status: peak memory needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--controlnet", type=Path, help="a converted ControlNet for the model")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--strength", type=float, default=0.5, help="image and inpaint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default=None, help="OpenVINO's hint (default: device's)")
    parser.add_argument("--cache", type=Path, required=True, help="compiled-blob cache folder")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # a child of peak_memory
    args = parser.parse_args()
    if args.only is not None:
        fields = variants(args.size, args.strength, args.controlnet is not None)[args.only]
        load(args, args.only == "control")(PROMPT, seed=1, **fields, **shape(args))
        print(peak_rss())
        return
    measured = side_by_side(args)
    cpu, flags = cpu_description()
    report = {
        "cpu": cpu,
        "flags": flags,
        "openvino": ov.get_version(),
        "size": args.size,
        "steps": args.steps,
        "strength": args.strength,
        "rounds": args.rounds,
        **measured,
        "peak_rss_gib": peak_memory(args, list(measured["variants"])),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
