"""The A1111 attention syntax is parsed as diffusers' community long-prompt-weighting pipeline
parses it: pieces and weights the real reference produced (tests/data/make_lpw_reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lcm_lite.errors import UsageError
from lcm_lite.prompting.attention import parse_attention
from lcm_lite.prompting.chunks import WeightedTokens, chunk_count, chunk_layout, weighted_tokens

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "lpw_reference.json").read_text())
PARSED = [case for case in REFERENCE["parse"] if "pieces" in case]
REFUSED = [case for case in REFERENCE["parse"] if "error" in case]


@pytest.mark.parametrize("case", PARSED, ids=[case["prompt"] for case in PARSED])
def test_pieces_and_weights_are_the_reference_parsers(case):
    assert parse_attention(case["prompt"]) == [tuple(piece) for piece in case["pieces"]]


@pytest.mark.parametrize("case", REFUSED, ids=[case["prompt"] for case in REFUSED])
def test_a_weight_the_reference_cannot_read_is_a_one_line_error(case):
    with pytest.raises(UsageError, match="is not a number") as refused:
        parse_attention(case["prompt"])
    assert "\n" not in str(refused.value)


def test_tokens_past_the_limit_are_dropped_and_counted():
    tokens = weighted_tokens([([1, 2, 3], 1.1), ([4, 5], 0.5)], limit=4)
    assert tokens == WeightedTokens([1, 2, 3, 4], [1.1, 1.1, 1.1, 0.5], dropped=1)


def test_prompts_share_the_chunk_count_of_the_longest_from_one_to_three():
    short, long = WeightedTokens([7] * 3, [1.0] * 3), WeightedTokens([7] * 80, [2.0] * 80)
    assert chunk_count([WeightedTokens([], [])], room=75) == 1
    assert chunk_count([short, long], room=75) == 2
    assert chunk_count([WeightedTokens([7] * 500, [1.0] * 500)], room=75) == 3
    layout = chunk_layout([short, long], 2, bos=0, eos=9, pad=8, chunk_length=77)
    assert layout.input_ids.shape == (2, 2, 77) and layout.weights.shape == (2, 154)
    assert layout.input_ids[1, 0].tolist() == [0] + [8] * 75 + [9]  # the short one's 2nd chunk
    assert layout.input_ids[1, 1, :7].tolist() == [0, 7, 7, 7, 7, 7, 8]
    assert layout.weights[1, 77:84].tolist() == [1.0, 2, 2, 2, 2, 2, 1.0]
