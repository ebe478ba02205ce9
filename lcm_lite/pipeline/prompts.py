"""Prompts to the UNet's ``encoder_hidden_states``: tokenize, run the text encoder, and keep the
last call's encodings, so that exploring seeds of one prompt costs no text encoding (kept per
LoRA blend: a text encoder LoRA's weights change the encodings).

Plain prompts are diffusers' ``encode_prompt``: 77 tokens, truncated. With ``prompt_weighting``,
prompts are read as diffusers' community long-prompt-weighting pipeline reads them
(``prompting``): A1111's weights, and up to 3 chunks of 77 tokens, the prompts and negative
prompts of a call cut into the same number of chunks. With ``clip_skip``, the text encoder gives
the hidden state that many layers before the last, through its final layer norm
(``models.networks.TextEncoder``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lcm_lite.models.networks import TextEncoder
from lcm_lite.models.tokenizer import CLIPTokenizer
from lcm_lite.prompting.attention import parse_attention
from lcm_lite.prompting.chunks import (
    MAX_CHUNKS,
    WeightedTokens,
    chunk_count,
    chunk_layout,
    weigh,
    weighted_tokens,
)

log = logging.getLogger("lcm_lite")


@dataclass(frozen=True)
class TokenizedText:
    """Prompts ready for the text encoder: ``input_ids`` int64 (chunks, batch, 77), each chunk
    encoded on its own and the encodings joined; ``weights`` (batch, 77 * chunks) or None
    (unweighted); per prompt, how many tokens were dropped."""

    input_ids: np.ndarray
    weights: np.ndarray | None
    dropped_tokens: list[int]

    @property
    def text_length(self) -> int:
        """Tokens the UNet reads: 77 per chunk."""
        return self.input_ids.shape[0] * self.input_ids.shape[2]


class PromptEncoder:
    """``tokenize`` then ``encode``, as diffusers' ``encode_prompt`` (or, with weighting, as
    ``get_weighted_text_embeddings``); the encodings of the last two prompt lists (a call's
    prompts and negative prompts) are kept."""

    def __init__(self, tokenizer: CLIPTokenizer) -> None:
        self.tokenizer = tokenizer
        self._kept: dict[tuple[object, ...], np.ndarray] = {}

    def tokenize(
        self, prompts: list[str], negative_prompts: list[str] | None, *, weighting: bool
    ) -> tuple[TokenizedText, TokenizedText | None]:
        """The prompts' (and negative prompts') tokens; warns of each prompt truncated."""
        texts = [prompts] if negative_prompts is None else [prompts, negative_prompts]
        if weighting:
            tokenized = self._weighted(texts)
        else:
            tokenized = []
            for batch in texts:
                tokens = self.tokenizer(batch)
                tokenized.append(TokenizedText(tokens.input_ids[None], None, tokens.dropped_tokens))
        for batch, tokens in zip(texts, tokenized, strict=True):
            for text, dropped in zip(batch, tokens.dropped_tokens, strict=True):
                if dropped:
                    log.warning("prompt too long: %d tokens dropped from %.40r", dropped, text)
        return tokenized[0], (tokenized[1] if negative_prompts is not None else None)

    def _weighted(self, texts: list[list[str]]) -> list[TokenizedText]:
        """Each prompt's pieces tokenized one by one; all cut into the chunks the longest needs."""
        room = self.tokenizer.model_max_length - 2
        batches: list[list[WeightedTokens]] = []
        for batch in texts:
            weighted = []
            for prompt in batch:
                pieces = parse_attention(prompt)
                ids = self.tokenizer.token_ids([text for text, _ in pieces])
                weights = [weight for _, weight in pieces]
                pieces_ids = list(zip(ids, weights, strict=True))
                weighted.append(weighted_tokens(pieces_ids, room * MAX_CHUNKS))
            batches.append(weighted)
        num_chunks = chunk_count([prompt for batch in batches for prompt in batch], room)
        tokenized = []
        for batch in batches:
            layout = chunk_layout(
                batch,
                num_chunks,
                bos=self.tokenizer.bos_token_id,
                eos=self.tokenizer.eos_token_id,
                pad=self.tokenizer.pad_token_id,
                chunk_length=self.tokenizer.model_max_length,
            )
            dropped = [prompt.dropped for prompt in batch]
            tokenized.append(TokenizedText(layout.input_ids, layout.weights, dropped))
        return tokenized

    def encode(
        self,
        tokens: TokenizedText,
        clip_skip: int | None,
        text_encoder: Callable[[int | None], TextEncoder],
        timings: dict[str, float],
        blend: Sequence[float] = (),
    ) -> np.ndarray:
        """The embeddings (batch, 77 * chunks, hidden) of ``tokens``; ``text_encoder(clip_skip)``
        gives the compiled encoder (asked only when the tokens, or the LoRA weights ``blend``,
        are new). Adds to ``timings["text_encoder"]``."""
        key = (tokens.input_ids.tobytes(), _bytes(tokens.weights), clip_skip, tuple(blend))
        timings.setdefault("text_encoder", 0.0)
        if key not in self._kept:
            encoder = text_encoder(clip_skip)
            clock = time.perf_counter()
            chunks = [encoder(chunk) for chunk in tokens.input_ids]
            embeddings = np.concatenate(chunks, axis=1) if len(chunks) > 1 else chunks[0]
            if tokens.weights is not None:
                embeddings = weigh(embeddings, tokens.weights)
            timings["text_encoder"] += time.perf_counter() - clock
            self._kept[key] = embeddings
            if len(self._kept) > 2:
                self._kept.pop(next(iter(self._kept)))
        return self._kept[key]


def _bytes(weights: Sequence[float] | np.ndarray | None) -> bytes | None:
    return None if weights is None else np.asarray(weights).tobytes()
