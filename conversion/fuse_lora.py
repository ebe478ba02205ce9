"""Fuse LoRA adapters into the torch networks before export (``lcm-lite-convert --lora``).

diffusers does it: ``load_lora_weights`` of each file, ``set_adapters`` with the weights,
``fuse_lora`` (``W += weight * alpha / rank * B A``), ``unload_lora_weights`` (plain modules again,
so the IR's names carry no PEFT wrappers and runtime LoRAs still find their layers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from conversion.messages import first_line
from lcm_lite.errors import ModelError
from lcm_lite.models.lora import resolve_lora_file


def fuse_loras(
    loras: Sequence[tuple[str | Path, float]],
    text_encoder: CLIPTextModel,
    unet: UNet2DConditionModel,
) -> None:
    """Fuse ``loras`` ([(file or hub id, weight)]) into both networks, in place (diffusers loads
    a LoRA into both at once; the export keeps the one it is writing)."""
    holder = StableDiffusionPipeline(
        vae=None,
        text_encoder=text_encoder,
        tokenizer=None,
        unet=unet,
        scheduler=None,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    names = [f"lora{i}" for i in range(len(loras))]
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    with torch.no_grad():
        for (source, _), name in zip(loras, names, strict=True):
            path = resolve_lora_file(str(source))
            try:
                holder.load_lora_weights(str(path), adapter_name=name)
            except Exception as error:  # diffusers and PEFT raise many types on a bad file
                raise ModelError(f"cannot apply LoRA {source}: {first_line(error)}") from None
        holder.set_adapters(names, adapter_weights=[float(weight) for _, weight in loras])
        holder.fuse_lora(components=["text_encoder", "unet"], adapter_names=names)
        holder.unload_lora_weights()
