"""What a long prompt costs (prints one JSON object): with ``prompt_weighting``, a prompt of 1, 2
and 3 chunks (77, 154, 231 tokens for the UNet), each run ``--repeats`` times after a warm-up
(which compiles the UNet for that text length); the medians of the text encoder's seconds (every
run's prompt differs by a word, so none is served from the kept encodings) and of one UNet step.

    python -m benchmarks.long_prompts MODEL_DIR [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

WORDS = "a (tall:1.2) lighthouse at dusk, [blurry] storm clouds, oil painting"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=None)
    args = parser.parse_args()
    pipe = LCMPipeline.from_pretrained(args.model, precision=args.precision)
    figures = {}
    for chunks in (1, 2, 3):
        base = WORDS
        while True:  # grow the prompt until it takes this many chunks
            tokens, _ = pipe.prompt_encoder.tokenize([base], None, weighting=True)
            if tokens.input_ids.shape[0] >= chunks:
                break
            base += ", " + WORDS
        text_encoder, unet_step = [], []
        for run in range(args.repeats + 1):
            result = pipe(
                f"{base} {run}",
                prompt_weighting=True,
                steps=2,
                seed=run,
                width=args.size,
                height=args.size,
            )
            if run:  # the first compiles
                text_encoder.append(result.timings["text_encoder"])
                unet_step.append(result.timings["unet_step_2"])
        figures[f"{77 * chunks} tokens"] = {
            "text_encoder_ms": round(1000 * statistics.median(text_encoder), 2),
            "unet_step_ms": round(1000 * statistics.median(unet_step), 2),
        }
    print(json.dumps({"model": args.model, "size": args.size, "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
