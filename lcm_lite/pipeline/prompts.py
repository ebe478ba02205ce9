"""Prompts to the UNet's ``encoder_hidden_states``: tokenize, run the text encoder, and keep the
last call's encodings, so that exploring seeds of one prompt costs no text encoding (kept per
LoRA blend: a text encoder LoRA's weights change the encodings)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from lcm_lite.models.networks import TextEncoder
from lcm_lite.models.tokenizer import CLIPTokenizer, TokenizedPrompts

log = logging.getLogger("lcm_lite")


class PromptEncoder:
    """``encode(prompts)`` -> (tokens, last_hidden_state), as diffusers' ``encode_prompt``; the
    encodings of the last two prompt lists (a call's prompts and negative prompts) are kept."""

    def __init__(self, tokenizer: CLIPTokenizer) -> None:
        self.tokenizer = tokenizer
        self._kept: dict[tuple[object, ...], tuple[TokenizedPrompts, np.ndarray]] = {}

    def encode(
        self,
        prompts: list[str],
        text_encoder: Callable[[], TextEncoder],
        timings: dict[str, float],
        blend: Sequence[float] = (),
    ) -> tuple[TokenizedPrompts, np.ndarray]:
        """The prompts' tokens and embeddings; ``text_encoder()`` gives the compiled encoder
        (asked only when the prompts, or the LoRA weights ``blend``, are new). Adds to
        ``timings["tokenize"]`` and ``["text_encoder"]``; warns of each prompt CLIP truncates."""
        key = (*prompts, tuple(blend))
        if key not in self._kept:
            self._kept[key] = self._encode(prompts, text_encoder, timings)
            if len(self._kept) > 2:
                self._kept.pop(next(iter(self._kept)))
        timings.setdefault("tokenize", 0.0)
        timings.setdefault("text_encoder", 0.0)
        tokens, embeddings = self._kept[key]
        for text, dropped in zip(prompts, tokens.dropped_tokens, strict=True):
            if dropped:
                log.warning("prompt too long for CLIP: %d tokens dropped from %.40r", dropped, text)
        return tokens, embeddings

    def _encode(
        self,
        prompts: list[str],
        text_encoder: Callable[[], TextEncoder],
        timings: dict[str, float],
    ) -> tuple[TokenizedPrompts, np.ndarray]:
        clock = time.perf_counter()
        tokens = self.tokenizer(prompts)
        timings["tokenize"] = timings.get("tokenize", 0.0) + time.perf_counter() - clock
        encoder = text_encoder()
        clock = time.perf_counter()
        embeddings = encoder(tokens.input_ids)
        timings["text_encoder"] = timings.get("text_encoder", 0.0) + time.perf_counter() - clock
        return tokens, embeddings
