"""What a LoRA adapter costs per UNet step, by how its weight enters the network (prints JSON).

One process, one model folder, one LoRA file. Four variants generate the same image (same prompt,
seed and size) in turn, round after round, so that a shared machine's load falls on all alike;
one pipeline is held at a time (a full-size model's three would take about 10 GiB), each loaded
from the compiled-blob cache ``--cache`` (compiled in round 0):

- ``none``: no adapter;
- ``fixed``: the adapter at weight 1, compiled in (``lora_mode="fixed"``, the path before
  ``lora_weights``);
- ``runtime``: the adapter with its weight an input (``lora_mode="runtime"``), at weight 1;
- ``runtime_off``: the same compiled network, at weight 0 (loaded but off).

``runtime`` and ``runtime_off`` share one compiled network. Per variant: the median UNet step over
all rounds (``unet_step_*`` timings, wall seconds) and round 0's UNet compile seconds (cold).
Also the CPU, its vector flags, OpenVINO's version and the UNet's inference precision as
compiled.

    python benchmarks/lora_weights.py --model FULL_OV_DIR --lora r64.safetensors --rounds 2 \
        --cache /tmp/lora-bench-cache
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
from pathlib import Path

import openvino as ov
from machine import cpu_description

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

PROMPT = "a beautiful pink unicorn, 8k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--lora", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default=None, help="OpenVINO's hint (default: device's)")
    parser.add_argument("--cache", type=Path, required=True, help="compiled-blob cache folder")
    args = parser.parse_args()

    def load(mode: str | None) -> LCMPipeline:
        loras = None if mode is None else [(args.lora, 1.0)]
        return LCMPipeline.from_pretrained(
            args.model,
            precision=args.precision,
            cache_dir=args.cache,
            loras=loras,
            lora_mode=mode or "auto",
        )

    variants = {  # the pipeline's lora_mode (None: no LoRA) and the call's lora_weights
        "none": (None, None),
        "fixed": ("fixed", None),
        "runtime": ("runtime", [1.0]),
        "runtime_off": ("runtime", [0.0]),
    }
    steps: dict[str, list[float]] = {name: [] for name in variants}
    compile_seconds: dict[str, float] = {}
    fields = {"steps": args.steps, "seed": 1, "width": args.size, "height": args.size}
    precision = None
    for round_index in range(args.rounds + 1):  # round 0 compiles and warms up
        for name, (mode, weights) in variants.items():
            pipe = load(mode)
            extra = {} if weights is None else {"lora_weights": weights}
            result = pipe(PROMPT, **fields, **extra)
            unet = pipe._networks._held[("unet", False)].compiled
            precision = unet.get_property("INFERENCE_PRECISION_HINT")
            del pipe, unet
            gc.collect()
            if round_index == 0:
                compile_seconds.setdefault(name, result.timings.get("compile_unet", 0.0))
                continue
            steps[name] += [v for k, v in result.timings.items() if k.startswith("unet_step_")]
    cpu, flags = cpu_description()
    print(
        json.dumps(
            {
                "cpu": cpu,
                "flags": flags,
                "openvino": ov.get_version(),
                "inference_precision": getattr(precision, "get_type_name", precision.__str__)(),
                "size": args.size,
                "rounds": args.rounds,
                "variants": {
                    name: {
                        "unet_step_median_s": round(statistics.median(steps[name]), 3),
                        "unet_steps_s": [round(s, 3) for s in steps[name]],
                        "compile_unet_s": round(compile_seconds[name], 1),
                    }
                    for name in variants
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
