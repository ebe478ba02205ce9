"""A diffusers Stable Diffusion 1.x folder as one checkpoint in the original (CompVis / LDM) layout,
the ``.safetensors`` files Civitai and A1111 share: for tests of ``lcm-lite-convert FILE``.

The layout, as the original repository names its modules (and as diffusers'
``scripts/convert_diffusers_to_original_stable_diffusion.py`` writes it):

- UNet, under ``model.diffusion_model.``: ``input_blocks.N`` holds down block ``(N-1) // (L+1)``'s
  layer ``(N-1) % (L+1)`` (``.0`` the ResBlock, ``.1`` the transformer; ``L`` =
  ``layers_per_block``), the last of each level ``.0.op``, its downsampler; ``input_blocks.0.0``
  is ``conv_in``. ``middle_block.0/1/2``: ResBlock, transformer, ResBlock. ``output_blocks.N``:
  up block ``N // (L+1)``, layer ``N % (L+1)``, with the level's upsampler after its transformer
  (``.2.conv``) or ResBlock (``.1.conv``). ``time_embed.0/2`` and ``out.0/2`` are the time MLP
  and the final norm and convolution. A ResBlock's ``in_layers.0/2``, ``emb_layers.1``,
  ``out_layers.0/3`` and ``skip_connection`` are diffusers' ``norm1/conv1``, ``time_emb_proj``,
  ``norm2/conv2`` and ``conv_shortcut``; transformers keep diffusers' names.
- VAE, under ``first_stage_model.``: ``encoder.down.I.block.J`` / ``.downsample``,
  ``decoder.up.(3-I).block.J`` / ``.upsample`` (the decoder's levels numbered from the bottom),
  ``mid.block_1/attn_1/block_2``, ``norm_out``, ``nin_shortcut``; the mid attention's ``q/k/v/
  proj_out`` 1x1 convolutions (diffusers' linear ``to_q/k/v/out.0``) and ``norm``.
- Text encoder, under ``cond_stage_model.transformer.``: transformers' CLIPTextModel as it was
  saved when SD 1.5 was released, ``text_model.embeddings...`` (transformers 5 saves it without
  ``text_model.``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def write_original_checkpoint(diffusers_dir: Path, path: Path) -> Path:
    """Save the UNet, VAE and text encoder of the diffusers folder ``diffusers_dir`` as one
    safetensors file in the original layout, in float32 (as ``from_pretrained`` loads them).
    Returns ``path``."""
    unet = UNet2DConditionModel.from_pretrained(diffusers_dir, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(diffusers_dir, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(diffusers_dir, subfolder="text_encoder")
    per_level = unet.config.layers_per_block + 1
    has_attention = ["CrossAttn" in kind for kind in unet.config.up_block_types]
    tensors: dict[str, torch.Tensor] = {}
    for key, value in unet.state_dict().items():
        tensors["model.diffusion_model." + _unet_key(key, per_level, has_attention)] = value
    for key, value in vae.state_dict().items():
        name = _vae_key(key, len(vae.config.up_block_types))
        if re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", name):
            value = value[:, :, None, None]  # a linear layer as the 1x1 convolution it was
        tensors["first_stage_model." + name] = value
    for key, value in text_encoder.state_dict().items():
        text_key = key if key.startswith("text_model.") else "text_model." + key
        tensors["cond_stage_model.transformer." + text_key] = value
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _unet_key(key: str, per_level: int, has_attention: list[bool]) -> str:
    for diffusers, original in _UNET_TOP.items():
        if key.startswith(diffusers + "."):
            return original + key[len(diffusers) :]
    match = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if match:
        kind, level, part, layer, rest = match[1], int(match[2]), match[3], int(match[4]), match[5]
        block = level * per_level + layer + (1 if kind == "down_blocks" else 0)
        blocks = "input_blocks" if kind == "down_blocks" else "output_blocks"
        if part == "resnets":
            return f"{blocks}.{block}.0.{_resnet_key(rest)}"
        return f"{blocks}.{block}.1.{rest}"
    match = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if match:
        return f"input_blocks.{(int(match[1]) + 1) * per_level}.0.op.{match[2]}"
    match = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key)
    if match:
        level = int(match[1])
        position = 2 if has_attention[level] else 1
        return f"output_blocks.{level * per_level + per_level - 1}.{position}.{match[2]}"
    match = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if match and match[1] == "resnets":
        return f"middle_block.{2 * int(match[2])}.{_resnet_key(match[3])}"
    if match:
        return f"middle_block.1.{match[3]}"
    raise ValueError(f"no original name for UNet key {key}")


def _resnet_key(rest: str) -> str:
    name, _, parameter = rest.rpartition(".")
    return f"{_RESNET[name]}.{parameter}"


def _vae_key(key: str, levels: int) -> str:
    key = key.replace("conv_norm_out", "norm_out")
    match = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if match:
        coder, part, index, rest = match[1], match[2], int(match[3]), match[4]
        if part == "resnets":
            return f"{coder}.mid.block_{index + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        name, _, parameter = rest.rpartition(".")
        return f"{coder}.mid.attn_1.{_VAE_ATTENTION[name]}.{parameter}"
    match = re.match(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*)", key)
    if match:
        inner = f"block.{match[3]}" if match[2] == "resnets" else "downsample"
        rest = match[4].replace("conv_shortcut", "nin_shortcut")
        return f"encoder.down.{match[1]}.{inner}.{rest}"
    match = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)", key)
    if match:
        inner = f"block.{match[3]}" if match[2] == "resnets" else "upsample"
        rest = match[4].replace("conv_shortcut", "nin_shortcut")
        return f"decoder.up.{levels - 1 - int(match[1])}.{inner}.{rest}"
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
