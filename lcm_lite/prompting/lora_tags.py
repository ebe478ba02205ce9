"""AUTOMATIC1111's LoRA tags in a prompt: ``<lora:NAME>``, ``<lora:NAME:WEIGHT>`` (its
``extra_networks`` syntax, ``<lora:NAME:TE_WEIGHT:UNET_WEIGHT>`` too). A1111 takes the tags out
of the prompt before it is encoded and applies LoRA NAME at WEIGHT (default 1); lcm-lite reads
them as the weights of the adapters loaded with the model (``lora_weights``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from lcm_lite.errors import UsageError

TAG = re.compile(r"<lora:([^>]+)>")  # A1111's ``<(\w+):([^>]+)>``, for the lora network


@dataclass(frozen=True)
class LoraTag:
    """One ``<lora:NAME:WEIGHT>``."""

    name: str
    weight: float


def take_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """``prompt`` without its LoRA tags, and the tags in order. A weight that is not a finite
    number, or a UNet weight other than the text encoder's (lcm-lite blends an adapter at one
    weight in both networks), is a UsageError."""
    tags = []
    for match in TAG.finditer(prompt):
        name, *weights = (part.strip() for part in match[1].split(":"))
        try:
            values = [float(weight) for weight in weights[:2]] or [1.0]
        except ValueError:
            raise UsageError(f"{match[0]}: the weight is not a number") from None
        if not all(math.isfinite(value) for value in values):
            raise UsageError(f"{match[0]}: the weight is not a finite number")
        if len(set(values)) > 1:
            raise UsageError(
                f"{match[0]}: lcm-lite applies a LoRA at one weight to the text encoder and the "
                "UNet; give one weight"
            )
        tags.append(LoraTag(name, values[0]))
    return TAG.sub("", prompt), tags


def lora_name(source: str) -> str:
    """The name a tag calls a loaded adapter by: its file's name without the extension (A1111's
    names), or a hub id's last part."""
    return PurePosixPath(source.replace("\\", "/")).name.removesuffix(".safetensors")


def tagged_weights(
    tags: Sequence[LoraTag], loaded: Sequence[tuple[str, float]]
) -> tuple[list[float] | None, list[str]]:
    """The weight of each ``loaded`` (source, weight) adapter: the last tag naming it, else the
    weight it was loaded with; None when no tag names any. And the names of tags that name no
    loaded adapter (A1111 warns of those and goes on)."""
    names = [lora_name(source) for source, _ in loaded]
    weights = [weight for _, weight in loaded]
    unknown = []
    for tag in tags:
        if tag.name not in names:
            unknown.append(tag.name)
        for index, name in enumerate(names):
            if name == tag.name:
                weights[index] = tag.weight
    named = any(tag.name in names for tag in tags)
    return (weights if named else None), unknown
