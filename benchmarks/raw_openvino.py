"""The floor: each network alone in raw OpenVINO, static shapes, the device's default precision.

Prints JSON: the median seconds of one text encoder, one UNet and one VAE decoder inference
(after one warm-up inference each) and their sum for a whole image, ``text + steps * unet + vae``.
``--profile`` adds, per network, OpenVINO's time per operation type (``PERF_COUNT``) and the
GFLOP of its convolutions and matrix products, to compare with the CPU's peak FLOP rate.
"""

from __future__ import annotations

import argparse
import collections
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


def gflop(model: ov.Model) -> float:
    """Multiply-adds of every Convolution and MatMul of a static-shape model, times 2, in GFLOP."""
    flop = 0
    for op in model.get_ordered_ops():
        out = np.prod(list(op.output(0).get_shape())) if op.get_output_size() else 0
        if op.get_type_name() == "Convolution":  # each output: in_channels * kernel MACs
            flop += 2 * out * np.prod(list(op.input(1).get_shape())[1:])
        elif op.get_type_name() == "MatMul":  # each output: the reduced dimension's MACs
            a = list(op.input(0).get_shape())
            flop += 2 * out * (a[-2] if op.get_attributes()["transpose_a"] else a[-1])
    return float(flop) / 1e9


def seconds_by_op_type(request: ov.InferRequest) -> dict[str, float]:
    """The last inference's time per executed operation type, largest first (``PERF_COUNT``)."""
    seconds: collections.Counter[str] = collections.Counter()
    for info in request.profiling_info:
        seconds[info.node_type] += info.real_time.total_seconds()
    return {op: t for op, t in seconds.most_common() if t > 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed inferences per network")
    parser.add_argument("--cache", help="OpenVINO CACHE_DIR (compile time is not measured)")
    parser.add_argument("--profile", action="store_true", help="time per op type and GFLOP")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    latent = [1, 4, args.size // 8, args.size // 8]
    core = ov.Core()
    seconds = {}
    profile = {}
    for name in ("text_encoder", "unet", "vae_decoder"):
        model = core.read_model(args.model / name / "openvino_model.xml")
        model.reshape({p: static_shape(p, latent) for p in model.inputs})
        config: dict[str, object] = {"CACHE_DIR": args.cache} if args.cache else {}
        if args.profile:
            config["PERF_COUNT"] = True
            profile[name] = {"gflop": gflop(model)}
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
        if args.profile:
            profile[name]["gflop_per_s"] = profile[name]["gflop"] / seconds[name]
            profile[name]["seconds_by_op_type"] = seconds_by_op_type(request)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        del request, compiled
    image = seconds["text_encoder"] + args.steps * seconds["unet"] + seconds["vae_decoder"]
    report = {**seconds, "image": image, "precision": precision}
    print(json.dumps({**report, "profile": profile} if args.profile else report))


if __name__ == "__main__":
    main()
