"""``openvino_genai.Text2ImagePipeline`` as a user would script it, with its defaults.

With ``--images 1`` (the default) this is the one-shot script the benchmark times from process
start to PNG written; with more, it prints each image's seconds as JSON (the warm per-image time).
"""

from __future__ import annotations

import argparse
import json
import time

import openvino_genai
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--prompt", default="a beautiful pink unicorn, 8k")
    args = parser.parse_args()
    pipe = openvino_genai.Text2ImagePipeline(args.model, "CPU")
    seconds = []
    for index in range(args.images):
        clock = time.perf_counter()
        image = pipe.generate(
            args.prompt,
            width=args.size,
            height=args.size,
            num_inference_steps=args.steps,
            generator=openvino_genai.TorchGenerator(index),
        )
        seconds.append(time.perf_counter() - clock)
    Image.fromarray(image.data[0]).save(args.out)
    if args.images > 1:
        print(json.dumps({"image_seconds": seconds}))


if __name__ == "__main__":
    main()
