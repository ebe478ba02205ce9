"""The floor: each network alone in raw OpenVINO, static shapes, the device's default precision.

Prints JSON: the median seconds of one text encoder, one UNet and one VAE decoder inference
(after one warm-up inference each) and their sum for a whole image, ``text + steps * unet + vae``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import openvino as ov


def static_shape(port: ov.Output, latent: list[int]) -> list[int]:
    """Latents for 4-D inputs; elsewhere the IR's own dimensions, with batch (dynamic) 1."""
    shape = port.get_partial_shape()
    if shape.rank.get_length() == 4:
        return latent
    return [1 if d.is_dynamic else d.get_length() for d in shape]


def example(port: ov.ConstOutput, rng: np.random.Generator) -> np.ndarray:
    """Token ids, a mid-schedule timestep or Gaussian noise, by the input's type and rank."""
    dtype = port.get_element_type().to_dtype()
    shape = tuple(port.get_shape())
    if np.issubdtype(dtype, np.integer):
        return np.full(shape, 499 if len(shape) < 2 else 49407, dtype)
    if len(shape) < 2:  # a float timestep
        return np.full(shape, 499, dtype)
    return rng.standard_normal(shape).astype(dtype)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed inferences per network")
    parser.add_argument("--cache", help="OpenVINO CACHE_DIR (compile time is not measured)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    latent = [1, 4, args.size // 8, args.size // 8]
    core = ov.Core()
    seconds = {}
    for name in ("text_encoder", "unet", "vae_decoder"):
        model = core.read_model(args.model / name / "openvino_model.xml")
        model.reshape({p: static_shape(p, latent) for p in model.inputs})
        config = {"CACHE_DIR": args.cache} if args.cache else {}
        compiled = core.compile_model(model, "CPU", config)
        del model
        request = compiled.create_infer_request()
        inputs = [example(p, rng) for p in compiled.inputs]
        times = []
        for _ in range(1 + args.repeats):
            clock = time.perf_counter()
            request.infer(inputs, share_inputs=True)
            times.append(time.perf_counter() - clock)
        seconds[name] = statistics.median(times[1:])
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        del request, compiled
    image = seconds["text_encoder"] + args.steps * seconds["unet"] + seconds["vae_decoder"]
    print(json.dumps({**seconds, "image": image, "precision": precision}))


if __name__ == "__main__":
    main()
