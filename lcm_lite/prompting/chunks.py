"""Prompts past CLIP's 77 tokens, and weighted tokens, as diffusers' community long-prompt-weighting
pipeline encodes them (``get_weighted_text_embeddings`` with its defaults):

* each prompt's pieces (``attention.parse_attention``) are tokenized one by one and their tokens
  take the piece's weight; at most ``max_chunks`` * 75 tokens are kept (3: 225), the rest dropped;
* the prompts of a call, and its negative prompts, are cut into the same number of chunks of 75
  tokens: as many as the longest needs, at least one; each chunk is wrapped in the start and end
  tokens and padded with the pad token (``chunk_layout``), and encoded on its own; the chunks'
  77 embeddings each are joined: the UNet reads 77 * chunks tokens;
* each embedding is multiplied by its token's weight (1 for start, end and padding), then the
  whole prompt's embeddings are rescaled to keep their mean (``weigh``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CHUNKS = 3


@dataclass(frozen=True)
class WeightedTokens:
    """One prompt's tokens (no start or end token), each with its weight, and how many tokens
    past the limit were dropped."""

    ids: list[int]
    weights: list[float]
    dropped: int = 0


def weighted_tokens(pieces: Sequence[tuple[Sequence[int], float]], limit: int) -> WeightedTokens:
    """The tokens of ``(piece's tokens, weight)`` pieces, joined, the first ``limit`` kept."""
    ids = [token for tokens, _ in pieces for token in tokens]
    weights = [weight for tokens, weight in pieces for _ in tokens]
    return WeightedTokens(ids[:limit], weights[:limit], max(len(ids) - limit, 0))


def chunk_count(prompts: Sequence[WeightedTokens], room: int, max_chunks: int = MAX_CHUNKS) -> int:
    """Chunks of ``room`` tokens (75) the longest of ``prompts`` needs: 1 to ``max_chunks``."""
    longest = max((len(prompt.ids) for prompt in prompts), default=0)
    return max(1, min(max_chunks, -(-longest // room)))


@dataclass(frozen=True)
class ChunkLayout:
    """``input_ids`` int64 (chunks, batch, 77): chunk ``c`` of each prompt is its tokens
    ``75c .. 75c + 74`` (padded) between the start and end tokens; ``weights`` float32
    (batch, 77 * chunks): each token's weight where the chunks are joined (1 for start, end and
    padding)."""

    input_ids: np.ndarray
    weights: np.ndarray

    @property
    def num_chunks(self) -> int:
        return self.input_ids.shape[0]


def chunk_layout(
    prompts: Sequence[WeightedTokens],
    num_chunks: int,
    *,
    bos: int,
    eos: int,
    pad: int,
    chunk_length: int,
) -> ChunkLayout:
    """The prompts cut into ``num_chunks`` chunks of ``chunk_length`` (77) tokens each."""
    room = chunk_length - 2
    input_ids = np.full((num_chunks, len(prompts), chunk_length), pad, np.int64)
    input_ids[:, :, 0], input_ids[:, :, -1] = bos, eos
    weights = np.ones((len(prompts), num_chunks, chunk_length), np.float32)
    for row, prompt in enumerate(prompts):
        for chunk in range(num_chunks):
            ids = prompt.ids[chunk * room : (chunk + 1) * room]
            input_ids[chunk, row, 1 : 1 + len(ids)] = ids
            weights[row, chunk, 1 : 1 + len(ids)] = prompt.weights[
                chunk * room : (chunk + 1) * room
            ]
    return ChunkLayout(input_ids, weights.reshape(len(prompts), -1))


def weigh(embeddings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each token's embedding times its weight, then each prompt's embeddings rescaled so that
    their mean (over tokens and features) is the unweighted one's (the reference's
    ``previous_mean / current_mean``)."""
    previous_mean = embeddings.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
    weighted = embeddings * weights[:, :, None]
    current_mean = weighted.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
    return weighted * (previous_mean / current_mean)[:, None, None]
