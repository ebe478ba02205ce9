"""Regenerate ``lpw_reference.json`` and ``lpw_reference.npz``: what diffusers' community
long-prompt-weighting pipeline (``examples/community/lpw_stable_diffusion.py``, not shipped in the
diffusers wheel) produces, for the prompt-weighting parity tests, which cannot fetch it.

    git --git-dir=DIFFUSERS_GIT show HEAD:examples/community/lpw_stable_diffusion.py > lpw.py
    python tests/data/make_lpw_reference.py lpw.py COMMIT

It runs the real file: ``parse_prompt_attention`` on many prompts, and
``get_weighted_text_embeddings`` (its defaults) on the tiny random LCM the tests build
(``conversion.random_model``, synthetic CLIP vocabulary, seed 0), recording the token chunks the
text encoder is given, the padded weights, and the embeddings. A guard (diffusers' own
``encode_prompt`` of one prompt) lets the tests check they rebuilt the same text encoder.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import LatentConsistencyModelPipeline

from conversion.clip_vocab import write_synthetic_clip_vocab
from conversion.random_model import build_random_lcm

HERE = Path(__file__).resolve().parent
GUARD_PROMPT = "a lighthouse at dusk, oil painting"
LONG = ", ".join(["a (tall:1.2) lighthouse at dusk"] * 9 + ["[blurry] (storm clouds:0.8)"] * 4)
VERY_LONG = ", ".join([LONG, LONG, "the end ((of it))"])

PARSE_PROMPTS = [
    "",
    "normal text",
    "an (important) word",
    "(unbalanced",
    "unbalanced)",
    "[unbalanced",
    "]unbalanced[",
    "\\(literal\\]",
    "\\\\ a backslash, a lone \\ one, \\[ and \\)",
    "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "a (red:1.4) cube, ((masterpiece)), [blurry]",
    "[[small]] ((big)) [(both)]",
    "(x:0) and (y:-1.5) and (z:+2) and (w:.5)",
    "(text:abc) stays text",
    "a time 12:30) outside brackets",
    "[x:1.4] in square brackets",
    "(nested (inner:2) outer:0.5)",
    "((a) b) c",
    "colon: alone, (colon: inside)",
    "(a:1.4)(b:1.4)",
    "Ünïcode (ẞig:1.2) 日本語 [テスト]",
    "emoji 🙂 (smile:1.1)",
    "(x:+) a sign alone is text",
]
BAD_PROMPTS = ["(x:1.2.3)", "(x:.)", "(y:-.)", "(a:1.4) (b:1..5)"]

CASES = [  # name, prompts, negative prompts, clip_skip, skip_weighting
    ("weighted", ["a (red:1.4) cube, ((masterpiece)), [blurry] sky"], None, None, False),
    ("unweighted", ["a (red:1.4) cube, ((masterpiece)), [blurry] sky"], None, None, True),
    (
        "escaped",
        ["a \\(literal\\) cube \\[x\\] with a back\\\\slash and a lone \\ one"],
        None,
        None,
        False,
    ),
    ("unbalanced", ["a ((red cube on [a hill"], None, None, False),
    ("zero_and_negative", ["a (red:0) cube on a (hill:-0.5)"], None, None, False),
    ("two_chunks", [LONG], None, None, False),
    ("past_three_chunks", [VERY_LONG], None, None, False),
    ("batch", ["a (red:1.4) cube", LONG], None, None, False),
    ("clip_skip", ["a (red:1.4) cube, ((masterpiece)), [blurry] sky"], None, 1, False),
    ("clip_skip_two_chunks", [LONG], None, 1, False),
    ("guided", ["a (red:1.4) cube, ((masterpiece))"], [LONG], None, False),
]


def load_reference(path: Path):
    spec = importlib.util.spec_from_file_location("lpw_stable_diffusion", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_pipe(scratch: Path) -> LatentConsistencyModelPipeline:
    """The tests' tiny LCM (``tests/parity/test_prompt_weighting_parity.py``'s fixture)."""
    vocab = write_synthetic_clip_vocab(scratch / "vocab")
    model = build_random_lcm(scratch / "lcm", size="tiny", vocab_dir=vocab, seed=0)
    pipe = LatentConsistencyModelPipeline.from_pretrained(model)
    # diffusers (0.42) reaches the final LayerNorm as text_encoder.text_model.final_layer_norm,
    # which transformers 5's CLIPTextModel no longer has
    encoder = pipe.text_encoder
    encoder.text_model = SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
    return pipe


def main(reference_file: str, commit: str) -> None:
    lpw = load_reference(Path(reference_file))
    data: dict = {"diffusers_commit": commit, "parse": [], "cases": []}
    for prompt in PARSE_PROMPTS:
        data["parse"].append({"prompt": prompt, "pieces": lpw.parse_prompt_attention(prompt)})
    for prompt in BAD_PROMPTS:
        try:
            lpw.parse_prompt_attention(prompt)
        except ValueError as error:
            data["parse"].append({"prompt": prompt, "error": str(error)})
        else:
            raise AssertionError(f"the reference parsed {prompt!r}")
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as scratch:
        pipe = tiny_pipe(Path(scratch))
        with torch.no_grad():
            guard, _ = pipe.encode_prompt(GUARD_PROMPT, "cpu", 1, False)
        arrays["guard"] = guard.numpy()
        data["guard_prompt"] = GUARD_PROMPT
        chunks: list[np.ndarray] = []
        pipe.text_encoder.register_forward_pre_hook(
            lambda _module, args, kwargs: chunks.append(
                (args or (kwargs["input_ids"],))[0].numpy()
            ),
            with_kwargs=True,
        )
        padded: list = []
        pad_tokens_and_weights = lpw.pad_tokens_and_weights

        def recording_pad(*args, **kwargs):
            result = pad_tokens_and_weights(*args, **kwargs)
            padded.append(result)
            return result

        lpw.pad_tokens_and_weights = recording_pad
        for name, prompts, negatives, clip_skip, skip_weighting in CASES:
            chunks.clear()
            padded.clear()
            with torch.no_grad():
                embeds, negative_embeds = lpw.get_weighted_text_embeddings(
                    pipe, prompts, negatives, clip_skip=clip_skip, skip_weighting=skip_weighting
                )
            calls = len(chunks) // (2 if negatives else 1)
            data["cases"].append(
                {
                    "name": name,
                    "prompt": prompts,
                    "negative_prompt": negatives,
                    "clip_skip": clip_skip,
                    "weighting": not skip_weighting,
                    "prompt_chunks": [chunk.tolist() for chunk in chunks[:calls]],
                    "prompt_weights": padded[0][1],
                    "negative_chunks": [chunk.tolist() for chunk in chunks[calls:]],
                    "negative_weights": padded[1][1] if negatives else None,
                }
            )
            arrays[f"{name}.prompt_embeds"] = embeds.numpy()
            if negatives:
                arrays[f"{name}.negative_prompt_embeds"] = negative_embeds.numpy()
    (HERE / "lpw_reference.json").write_text(json.dumps(data, ensure_ascii=False) + "\n")
    np.savez_compressed(HERE / "lpw_reference.npz", **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
