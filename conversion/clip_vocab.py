"""A small synthetic CLIP byte-level BPE vocabulary, for machines without the real one.

The layout is the one of OpenAI CLIP's ``bpe_simple_vocab_16e6`` as Hugging Face stores it
(``vocab.json`` + ``merges.txt``): the 256 byte symbols of GPT-2's ``bytes_to_unicode`` table,
the same 256 with the end-of-word suffix ``</w>``, one token per merge, then ``<|startoftext|>``
and ``<|endoftext|>`` as the last two ids. The merges are learned with byte-pair encoding
(Sennrich et al., 2016) on a short built-in English text, so common words become few tokens.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

END_OF_WORD = "</w>"
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"

_TRAINING_TEXT = """
a photo of a cat sitting on a red chair in the garden, high quality, detailed
a beautiful pink unicorn standing in a field of flowers at sunset, 8k
portrait of an old man with a white beard, oil painting, dramatic lighting
cyberpunk cityscape like tokyo and new york with tall buildings at dusk, golden hour
a bowl of fresh fruit on a wooden table near the window, still life, soft light
an astronaut riding a horse on the moon, digital art, trending on artstation
a small house by the river in the mountains, winter morning, snow and mist
a dog playing with a ball on the beach, bright summer day, blue sky and clouds
the interior of a cozy library with books, candles and a fireplace at night
a futuristic car driving through the forest, cinematic, sharp focus, masterpiece
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the others are shifted past 255, in byte order.
    The dict's order is CLIP's vocabulary order for the 256 byte symbols.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [byte for byte in range(256) if byte not in printable]
    codepoints = printable + [256 + index for index in range(len(shifted))]
    return {byte: chr(code) for byte, code in zip(printable + shifted, codepoints, strict=True)}


def learn_bpe_merges(text: str) -> list[tuple[str, str]]:
    """Learn byte-pair merges on ``text`` until every word is a single token.

    Words are CLIP's: lower-cased runs of letters, the last symbol carrying ``</w>``. Each round
    merges the most frequent adjacent pair (ties broken by the pair itself, so it is deterministic).
    """
    byte_encoder = bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for word in re.findall(r"[a-z]+", text.lower()):
        symbols = [byte_encoder[byte] for byte in word.encode()]
        words[(*symbols[:-1], symbols[-1] + END_OF_WORD)] += 1

    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            return merges
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        words = Counter({_apply_merge(symbols, best): count for symbols, count in words.items()})


def _apply_merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every occurrence of ``pair`` in ``symbols`` by its concatenation."""
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if symbols[index : index + 2] == pair:
            merged.append(pair[0] + pair[1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return tuple(merged)


def write_synthetic_clip_vocab(directory: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of a synthetic CLIP vocabulary into ``directory``.

    Returns ``directory``. ``CLIPTokenizer.from_pretrained(directory)`` and the ``tokenizers``
    library read it like the real 49,408-token vocabulary, only smaller (about 1,000 tokens).
    """
    return write_clip_vocab(directory, learn_bpe_merges(_TRAINING_TEXT))


def write_clip_vocab(directory: Path, merges: list[tuple[str, str]]) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the CLIP vocabulary ``merges`` define into
    ``directory``: the 256 byte symbols, the same with ``</w>``, one token per merge, then
    ``<|startoftext|>`` and ``<|endoftext|>``. Returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [symbol + END_OF_WORD for symbol in byte_symbols]
    tokens += [left + right for left, right in merges]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (directory / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    return directory


def read_merges(text: str) -> list[tuple[str, str]]:
    """The merges of a ``merges.txt``, its first line (``#version: 0.2``) skipped (a merge may
    start with ``#`` too)."""
    lines = text.splitlines()
    pairs = (line.split(" ") for line in lines[lines[0].startswith("#version") :] if line)
    return [(left, right) for left, right in pairs]
