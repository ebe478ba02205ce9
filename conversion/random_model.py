"""Random-weight latent consistency models wired like SimianLuo/LCM_Dreamshaper_v7.

``build_random_lcm`` saves a diffusers ``LatentConsistencyModelPipeline`` folder with the same
component classes and configs as the real repository (UNet2DConditionModel with
``time_cond_proj_dim``, CLIPTextModel, AutoencoderKL, LCMScheduler, CLIPTokenizer, no safety
checker) and seeded random weights: "full" has the real SD1.5 sizes, "tiny" a few MB, "small"
SD 1.5's block structure (4 levels, 2 layers each, attention where SD 1.5 has it) at tiny widths,
which the original (LDM) checkpoint layout's key names need (``original_layout``).
``build_random_tiny_vae`` saves a diffusers ``AutoencoderTiny``: "full" is TAESD's architecture
(madebyollin/taesd), "tiny" a few thousand parameters.

``build_random_sd`` saves the plain Stable Diffusion twin (no ``time_cond_proj_dim``, PNDM
scheduler), the model an LCM-LoRA turns into a few-step one, or with ``inpaint`` its inpainting
fine-tune's architecture (a 9-channel UNet: latents, mask, masked picture's latents, as
stable-diffusion-v1-5/stable-diffusion-inpainting); ``build_random_lora`` a random LoRA for a saved
model, in kohya or PEFT format; ``build_random_controlnet`` a random ControlNet for a saved model,
whose "zero convolutions" are not zero.

    python -m conversion.random_model OUT_DIR --size tiny|small|full [--vocab DIR] [--seed N]
        [--plain-sd [--checkpoint FILE.safetensors] | --inpaint | --taesd]
    python -m conversion.random_model OUT.safetensors --lora-for MODEL_DIR [--rank R] [--seed N]
    python -m conversion.random_model OUT_DIR --controlnet-for MODEL_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    ControlNetModel,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.numpy import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from conversion.clip_vocab import write_synthetic_clip_vocab
from conversion.messages import silence_libraries
from conversion.original_layout import write_original_checkpoint
from conversion.tokenizer import save_clip_tokenizer

Size = Literal["tiny", "small", "full"]

# LCM_Dreamshaper_v7's scheduler/scheduler_config.json (LCMScheduler defaults but steps_offset).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "original_inference_steps": 50,
    "timestep_scaling": 10.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

# SD1.x's text encoder keeps the legacy ids (eos 2): CLIPTextModel then pools at argmax(input_ids).
_CLIP_TEXT_COMMON: dict[str, Any] = {
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
_SD_DOWN_BLOCKS = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_SD_UP_BLOCKS = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
_VAE_COMMON: dict[str, Any] = {
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "scaling_factor": 0.18215,
}


@dataclass(frozen=True)
class Architecture:
    """Constructor arguments of the three networks, and the dtype the weights are saved in.

    ``text_encoder`` omits ``vocab_size`` when it is taken from the tokenizer.
    """

    unet: dict[str, Any]
    text_encoder: dict[str, Any]
    vae: dict[str, Any]
    save_dtype: torch.dtype


ARCHITECTURES: dict[Size, Architecture] = {
    "tiny": Architecture(
        unet={
            "sample_size": 32,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 8,
            "time_cond_proj_dim": 32,
        },
        text_encoder={
            **_CLIP_TEXT_COMMON,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        vae={
            **_VAE_COMMON,
            "block_out_channels": (8, 16, 16, 16),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "sample_size": 256,
        },
        save_dtype=torch.float32,
    ),
    # SD1.5 with LCM's guidance-embedding projection; sample_size 96: the repo renders 768x768.
    "full": Architecture(
        unet={
            "sample_size": 96,
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "down_block_types": _SD_DOWN_BLOCKS,
            "up_block_types": _SD_UP_BLOCKS,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
            "time_cond_proj_dim": 256,
        },
        text_encoder={
            **_CLIP_TEXT_COMMON,
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "projection_dim": 768,
        },
        vae={
            **_VAE_COMMON,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "sample_size": 768,
        },
        save_dtype=torch.float16,
    ),
}
# SD 1.5's blocks, levels and layers at the tiny model's widths: the original layout's names fit it.
_TINY = ARCHITECTURES["tiny"]
ARCHITECTURES["small"] = replace(
    _TINY,
    unet={
        **_TINY.unet,
        "block_out_channels": (32, 32, 64, 64),
        "layers_per_block": 2,
        "down_block_types": _SD_DOWN_BLOCKS,
        "up_block_types": _SD_UP_BLOCKS,
    },
    vae={**_TINY.vae, "layers_per_block": 2},
)


def build_random_lcm(out_dir: Path, *, size: Size, vocab_dir: Path | None, seed: int = 0) -> Path:
    """Save a seeded random-weight LatentConsistencyModelPipeline (safetensors) to ``out_dir``.

    ``vocab_dir`` holds CLIP's ``vocab.json`` and ``merges.txt``; ``None`` uses a synthetic
    vocabulary. The same arguments give the same weights. Returns ``out_dir``.
    """
    return _build(out_dir, size=size, vocab_dir=vocab_dir, seed=seed, lcm=True)


def build_random_sd(
    out_dir: Path, *, size: Size, vocab_dir: Path | None, seed: int = 0, inpaint: bool = False
) -> Path:
    """``build_random_lcm``'s plain Stable Diffusion twin: a StableDiffusionPipeline whose UNet
    has no ``time_cond_proj_dim``, with SD 1.5's PNDM scheduler config; with ``inpaint`` a
    StableDiffusionInpaintPipeline whose UNet takes 9 channels (``in_channels=9``)."""
    return _build(out_dir, size=size, vocab_dir=vocab_dir, seed=seed, lcm=False, inpaint=inpaint)


INPAINTING_UNET_CHANNELS = 9  # latents (4), mask (1), masked picture's latents (4)


def _build(
    out_dir: Path,
    *,
    size: Size,
    vocab_dir: Path | None,
    seed: int,
    lcm: bool,
    inpaint: bool = False,
) -> Path:
    architecture = ARCHITECTURES[size]
    with tempfile.TemporaryDirectory() as scratch:
        source = vocab_dir or write_synthetic_clip_vocab(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(source, model_max_length=77)
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(**{"vocab_size": len(tokenizer), **architecture.text_encoder})
    unet_config = {**architecture.unet, **({} if lcm else {"time_cond_proj_dim": None})}
    if inpaint:
        unet_config["in_channels"] = INPAINTING_UNET_CHANNELS
    scheduler_config = {k: v for k, v in SCHEDULER_CONFIG.items() if k in _PNDM_KEYS}
    pipeline_class = (
        LatentConsistencyModelPipeline
        if lcm
        else StableDiffusionInpaintPipeline
        if inpaint
        else StableDiffusionPipeline
    )
    pipeline = pipeline_class(
        vae=AutoencoderKL(**architecture.vae),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet_config),
        scheduler=LCMScheduler(**SCHEDULER_CONFIG)
        if lcm
        else PNDMScheduler(**scheduler_config, skip_prk_steps=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _spread_final_layer_norm(pipeline.text_encoder, seed)
    pipeline.to(architecture.save_dtype)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    save_clip_tokenizer(tokenizer, out_dir / "tokenizer")
    return out_dir


def _spread_final_layer_norm(text_encoder: CLIPTextModel, seed: int) -> None:
    """Give the text encoder's final LayerNorm random weights and a bias of mean 0.5, as a trained
    CLIP's has. Default-initialised (weight 1, bias 0), every token's embedding has mean 0: the
    long-prompt weighting's rescale to the unweighted mean would divide noise by noise. Drawn from
    a generator of its own, so the other weights stay those of ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm  # transformers < 5
    with torch.no_grad():
        norm.weight.copy_(1.0 + 0.3 * torch.randn(norm.weight.shape, generator=generator))
        norm.bias.copy_(0.5 + 0.5 * torch.randn(norm.bias.shape, generator=generator))


# AutoencoderTiny's defaults are madebyollin/taesd's config; "tiny" keeps its 4 blocks (8x).
TINY_VAE_ARCHITECTURES: dict[Size, dict[str, Any]] = {
    "tiny": {
        "encoder_block_out_channels": (8, 8, 8, 8),
        "decoder_block_out_channels": (8, 8, 8, 8),
        "num_encoder_blocks": (1, 1, 1, 1),
        "num_decoder_blocks": (1, 1, 1, 1),
    },
    "full": {},
}


def build_random_tiny_vae(out_dir: Path, *, size: Size, seed: int = 0) -> Path:
    """Save a seeded random-weight AutoencoderTiny (float32 safetensors) to ``out_dir``.

    Default-initialised, TAESD's decoder maps every latent to nearly the same dark image (output
    std 0.03), and its encoder to near-zero latents: the last convolution of each is rescaled so
    that its outputs spread over their range (images of std about 0.4 in [-1, 1] from latents of
    SD's unscaled magnitude, std 4; latents of std 1 from images), which makes comparisons of
    images meaningful. Returns ``out_dir``.
    """
    torch.manual_seed(seed)
    vae = AutoencoderTiny(**TINY_VAE_ARCHITECTURES[size])
    with torch.no_grad():
        _spread_last_conv(vae.decoder, 4 * torch.randn(2, 4, 16, 16), mean=0.5, std=0.2)
        _spread_last_conv(vae.encoder, 2 * torch.rand(2, 3, 128, 128) - 1, mean=0.0, std=1.0)
    vae.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _spread_last_conv(
    module: torch.nn.Module, example: torch.Tensor, *, mean: float, std: float
) -> None:
    """Scale and shift ``module``'s last Conv2d so that its per-channel outputs on ``example``
    have this mean and standard deviation (DecoderTiny maps its [0, 1] output to [-1, 1])."""
    conv = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    outputs: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, output: outputs.append(output))
    module(example)
    handle.remove()
    dims = (0, 2, 3)
    gain = std / outputs[0].std(dim=dims)
    conv.weight.mul_(gain[:, None, None, None])
    conv.bias.copy_((conv.bias - outputs[0].mean(dim=dims)) * gain + mean)


_PNDM_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset")
LoraFormat = Literal["kohya", "peft"]


def build_random_lora(
    model_dir: Path,
    out_file: Path,
    *,
    rank: int = 4,
    alpha: float | None = None,
    lora_format: LoraFormat = "kohya",
    text_encoder: bool = True,
    seed: int = 0,
    dtype: type = np.float32,
) -> Path:
    """Save a seeded random LoRA for every Linear and Conv2d of the UNet (attention, proj_in/out,
    feed-forward, conv1/conv2 3x3, conv_shortcut, samplers, time_emb_proj: what LCM-LoRA covers)
    and, with ``text_encoder``, every Linear of the text encoder's layers.

    "kohya": ``lora_unet_<path_underscored>.lora_down/lora_up.weight`` and ``.alpha`` (when
    ``alpha`` is given); "peft": ``unet.<path>.lora_A/lora_B.weight``, ``alpha`` in diffusers'
    ``lora_adapter_metadata`` header. Both factors are random (PEFT starts ``B`` at zero), scaled
    so that the LoRA moves the output by a fraction of the layer's own; saved as ``dtype``
    (float16, as published LoRAs, for benchmarks). Returns ``out_file``.
    """
    generator = np.random.default_rng(seed)
    modules = _lora_targets(model_dir, text_encoder)
    tensors: dict[str, np.ndarray] = {}
    for network, name, weight_shape in modules:
        out_features, in_features, *kernel = weight_shape
        fan_in = in_features * int(np.prod(kernel or [1]))
        down = generator.standard_normal((rank, in_features, *kernel)) / np.sqrt(fan_in)
        up = generator.standard_normal((out_features, rank, *[1] * len(kernel))) * 0.5 / rank
        if lora_format == "kohya":
            prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[network]
            stem = prefix + name.replace(".", "_")
            tensors[f"{stem}.lora_down.weight"] = down.astype(dtype)
            tensors[f"{stem}.lora_up.weight"] = up.astype(dtype)
            if alpha is not None:
                tensors[f"{stem}.alpha"] = np.asarray(alpha, np.float32)
        else:
            tensors[f"{network}.{name}.lora_A.weight"] = down.astype(dtype)
            tensors[f"{network}.{name}.lora_B.weight"] = up.astype(dtype)
    metadata = None
    if lora_format == "peft" and alpha is not None:
        packed = {}  # the LoraConfig fields diffusers' save_lora_weights stores, per network
        for network in {n for n, _, _ in modules}:
            names = [name for n, name, _ in modules if n == network]
            config = {"r": rank, "lora_alpha": alpha, "target_modules": names}
            packed.update({f"{network}.{key}": value for key, value in config.items()})
        metadata = {"lora_adapter_metadata": json.dumps(packed), "format": "pt"}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_file), metadata=metadata)
    return out_file


def _lora_targets(model_dir: Path, text_encoder: bool) -> list[tuple[str, str, tuple[int, ...]]]:
    """(network, module path, weight shape) of each Linear and Conv2d a LoRA may change."""
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    targets = [
        ("unet", name, tuple(module.weight.shape))
        for name, module in unet.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
    ]
    if text_encoder:
        encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
        targets += [
            ("text_encoder", name, tuple(module.weight.shape))
            for name, module in encoder.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in name
        ]
    return targets


def build_random_controlnet(model_dir: Path, out_dir: Path, *, seed: int = 0) -> Path:
    """Save a seeded random ControlNetModel for the diffusers model ``model_dir`` (as diffusers'
    ``ControlNetModel.from_unet``: its encoder copied from the UNet) to ``out_dir``.

    A fresh ControlNet adds nothing: its "zero convolutions" (the residual projections and the
    conditioning embedding's last convolution) start at zero. Here they get random weights of
    a convolution's default scale; the conditioning embedding's convolutions get He's
    initialisation without biases and its last one is rescaled to give features of std 1 from
    pictures in [0, 1] (by default its eight convolutions pass on little of the picture, and
    mostly the zero padding's border pattern), so that the control picture and the conditioning
    scale move the image. For an inpainting model, it takes the latents alone (4 channels, its
    own ``conv_in``), as the SD 1.5 ControlNets used with it. SD 1.5-size models get diffusers'
    conditioning embedding (16, 32, 96, 256 channels); smaller ones a tiny one. Saved in the
    UNet's dtype. Returns ``out_dir``.
    """
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    dtype = unet.dtype
    full_size = unet.config.block_out_channels[0] >= 320
    torch.manual_seed(seed)
    unet.to(torch.float32)
    controlnet = ControlNetModel.from_unet(
        unet,
        conditioning_embedding_out_channels=(16, 32, 96, 256) if full_size else (8, 8, 16, 16),
        load_weights_from_unet=False,
    )
    copied = ["conv_in", "time_embedding", "down_blocks", "mid_block"]
    latent_channels = json.loads((Path(model_dir) / "vae" / "config.json").read_text())[
        "latent_channels"
    ]
    if controlnet.config.in_channels != latent_channels:
        # an inpainting UNet's 9 channels: a ControlNet takes the latents alone (as SD 1.5's)
        config = {**controlnet.config, "in_channels": latent_channels}
        controlnet = ControlNetModel.from_config(config)
        copied.remove("conv_in")
    for name in copied:
        # strict=False: an LCM's time embedding has a guidance projection a ControlNet lacks
        getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict(), strict=False)
    zero_convolutions = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for convolution in zero_convolutions:
            convolution.reset_parameters()  # PyTorch's default (Kaiming-uniform) initialisation
        embedding = controlnet.controlnet_cond_embedding
        for convolution in embedding.modules():
            if isinstance(convolution, torch.nn.Conv2d):  # He's gain, no bias: the picture goes
                torch.nn.init.kaiming_normal_(convolution.weight)  # through, not the padding
                torch.nn.init.zeros_(convolution.bias)
        scale = 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)
        _spread_last_conv(embedding, torch.rand(2, 3, 16 * scale, 16 * scale), mean=0.0, std=1.0)
    controlnet.to(dtype).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m conversion.random_model OUT --size tiny|full`` (a model),
    ``OUT.safetensors --lora-for MODEL_DIR`` (a random LoRA for that model) or ``OUT
    --controlnet-for MODEL_DIR`` (a random ControlNet for it)."""
    parser = argparse.ArgumentParser(
        prog="python -m conversion.random_model", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", type=Path, help="folder (a model) or .safetensors file (a LoRA)")
    parser.add_argument("--size", choices=get_args(Size), help="model size")
    parser.add_argument("--vocab", type=Path, help="folder with CLIP vocab.json and merges.txt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--taesd", action="store_true", help="build a tiny VAE (AutoencoderTiny) instead of an LCM"
    )
    parser.add_argument("--plain-sd", action="store_true", help="a plain Stable Diffusion model")
    parser.add_argument(
        "--inpaint",
        action="store_true",
        help="a plain Stable Diffusion inpainting model (9-channel UNet)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="with --plain-sd: also save it as one .safetensors in the original (LDM) layout",
    )
    parser.add_argument("--lora-for", type=Path, metavar="MODEL_DIR", help="write a random LoRA")
    parser.add_argument("--rank", type=int, default=64, help="float16 LoRA's rank (default 64)")
    parser.add_argument(
        "--controlnet-for", type=Path, metavar="MODEL_DIR", help="write a random ControlNet"
    )
    args = parser.parse_args(argv)
    if args.vocab is not None and not (args.vocab / "vocab.json").is_file():
        parser.error(f"--vocab {args.vocab} has no vocab.json")
    given = [args.size, args.lora_for, args.controlnet_for]
    if sum(value is not None for value in given) != 1:
        parser.error(
            "give one of --size (a model), --lora-for MODEL_DIR (a LoRA) or --controlnet-for "
            "MODEL_DIR (a ControlNet)"
        )
    silence_libraries()
    if args.checkpoint is not None and not args.plain_sd:
        parser.error("--checkpoint needs --plain-sd (single-file checkpoints are SD 1.5 models)")
    if args.taesd and args.size not in TINY_VAE_ARCHITECTURES:
        parser.error(f"a tiny VAE is {' or '.join(TINY_VAE_ARCHITECTURES)}, not {args.size}")
    if args.controlnet_for is not None:
        build_random_controlnet(args.controlnet_for, args.out, seed=args.seed)
        return 0
    if args.taesd:
        build_random_tiny_vae(args.out, size=args.size, seed=args.seed)
        return 0
    if args.lora_for is not None:
        build_random_lora(
            args.lora_for,
            args.out,
            rank=args.rank,
            alpha=args.rank,
            seed=args.seed,
            dtype=np.float16,
        )
        return 0
    if args.plain_sd or args.inpaint:
        build_random_sd(
            args.out, size=args.size, vocab_dir=args.vocab, seed=args.seed, inpaint=args.inpaint
        )
    else:
        build_random_lcm(args.out, size=args.size, vocab_dir=args.vocab, seed=args.seed)
    if args.checkpoint is not None:
        write_original_checkpoint(args.out, args.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
