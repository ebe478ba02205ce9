"""Export a latent consistency model to OpenVINO IR, in the folder layout of optimum-intel.

The folder that ``openvino_genai.Text2ImagePipeline`` and optimum-intel's
``OVLatentConsistencyModelPipeline`` read unchanged::

    model_index.json
    scheduler/scheduler_config.json
    tokenizer/      vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json,
                    openvino_tokenizer.xml/.bin, openvino_detokenizer.xml/.bin
    text_encoder/   openvino_model.xml/.bin, config.json
    unet/           openvino_model.xml/.bin, config.json
    vae_decoder/    openvino_model.xml/.bin, config.json (the VAE's)
    vae_encoder/    the same (image to image's), unless ``with_vae_encoder=False``

A tiny autoencoder (diffusers' ``AutoencoderTiny``, TAESD) becomes the tiny-VAE folder FastSD CPU
reads: ``vae_decoder/`` and ``vae_encoder/`` alone (``lcm_lite.tiny_vae``). A ``ControlNetModel``
becomes a ControlNet folder: ``controlnet/`` alone (``lcm_lite.models.controlnet``).

Each network is traced from float32 torch weights and freed before the next is loaded, so the
full-size model converts within a few GiB.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import diffusers
import openvino as ov
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    ControlNetModel,
    LCMScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

from conversion import WEIGHT_FORMATS
from conversion.checkpoint import checkpoint_folder, is_checkpoint_file
from conversion.fuse_lora import fuse_loras
from conversion.messages import first_line, versions_note
from conversion.networks import (
    Network,
    controlnet_networks,
    text_encoder_networks,
    unet_networks,
    vae_networks,
)
from conversion.source import (
    is_controlnet,
    is_inpainting,
    is_latent_consistency_model,
    is_tiny_vae,
    open_source,
)
from conversion.tokenizer import openvino_tokenizer_models, save_clip_tokenizer
from lcm_lite.errors import ModelError, OutputError, UsageError
from lcm_lite.models.configs import read_json_object
from lcm_lite.models.staging import check_destination, staged_directory
from lcm_lite.quantization import DEFAULT_SAMPLES, DEFAULT_SIZE
from lcm_lite.quantization.folder import write_quantized_unet

Progress = Callable[[str], None]

# As diffusers' LatentConsistencyModelPipeline.save_config writes it, less the safety checker.
MODEL_INDEX: dict[str, Any] = {
    "_class_name": "LatentConsistencyModelPipeline",
    "_diffusers_version": diffusers.__version__,
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "LCMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def convert(
    source: str | Path,
    out_dir: Path,
    *,
    weights: str = "fp16",
    with_vae_encoder: bool = True,
    force: bool = False,
    quantize_unet: bool = False,
    calibration_size: int = DEFAULT_SIZE,
    calibration_samples: int = DEFAULT_SAMPLES,
    loras: Sequence[tuple[str | Path, float]] = (),
    progress: Progress | None = None,
    config: Path | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Export the LCM ``source`` (diffusers folder or hub id) to the OpenVINO folder ``out_dir``;
    a tiny VAE (``AutoencoderTiny``) ``source`` to a tiny-VAE folder (decoder and encoder); a
    ``ControlNetModel`` ``source`` to a ControlNet folder; a single-file SD 1.5 checkpoint
    (``.safetensors``; a pickled ``.ckpt`` with ``allow_pickle``) as the diffusers folder
    ``conversion.checkpoint`` makes of it with the configs in ``config`` (default: SD 1.5's,
    shipped).

    ``weights``: "fp32" keeps float32, "fp16" stores float16, "int8" compresses the weights with
    NNCF (INT8 asymmetric, per channel). ``out_dir`` appears whole or not at all; an existing
    non-empty one is replaced only with ``force``. ``quantize_unet`` quantizes the exported UNet to
    int8 weights and activations as ``lcm-lite quantize`` does (``lcm_lite.quantization``: no
    torch), on ``calibration_samples`` UNet calls that lcm-lite makes with the exported folder at
    ``calibration_size`` pixels (``loras`` fused; a plain Stable Diffusion source needs its
    LCM-LoRA).
    ``loras`` ([(file or hub id, weight)]) are fused into the text encoder and UNet
    (``fuse_lora``); a plain Stable Diffusion source with an LCM-LoRA fused gets an LCMScheduler.
    ``progress`` receives one line per step.
    Raises UsageError, ModelError or OutputError. Returns ``out_dir``.
    """
    if weights not in WEIGHT_FORMATS:
        raise UsageError(f"unknown weight format {weights!r}: choose fp32, fp16 or int8")
    out_dir = Path(out_dir)
    report = progress or (lambda _line: None)
    check_destination(out_dir, force=force)
    if is_checkpoint_file(source):
        scratch = out_dir.resolve().parent
        with checkpoint_folder(
            Path(source), scratch, config=config, allow_pickle=allow_pickle, report=report
        ) as checkpoint_dir:
            return convert(
                checkpoint_dir,
                out_dir,
                weights=weights,
                with_vae_encoder=with_vae_encoder,
                force=force,
                quantize_unet=quantize_unet,
                calibration_size=calibration_size,
                loras=loras,
                progress=progress,
            )
    if config is not None:
        raise UsageError("--config is for a single-file checkpoint, and SOURCE is not one")
    folder = open_source(source).resolve()
    if out_dir.resolve() in (folder, *folder.parents):
        raise UsageError(f"{out_dir} holds the source model: choose another output folder")
    single = (
        "a tiny VAE" if is_tiny_vae(folder) else "a ControlNet" if is_controlnet(folder) else None
    )
    if single and (quantize_unet or loras):
        raise UsageError(f"{source} is {single}: it has no UNet to quantize or fuse a LoRA into")
    if quantize_unet and not single and is_inpainting(folder):
        raise UsageError(
            f"{source} is an inpainting model (9-channel UNet): --quantize-unet calibrates on "
            "text to image only; convert it without"
        )
    if quantize_unet and not loras and not single and not is_latent_consistency_model(folder):
        raise UsageError(
            f"{source} is a plain Stable Diffusion model: --quantize-unet calibrates on LCM "
            "sampling, so fuse an LCM-LoRA with --lora to quantize it"
        )
    try:
        with staged_directory(out_dir, force=force) as staging:
            if single == "a tiny VAE":
                _export_tiny_vae(folder, staging, weights, report)
            elif single == "a ControlNet":
                _export_controlnet(folder, staging, weights, report)
            else:
                _write_pipeline_files(folder, staging, report, loras)
                text_length = _export_text_encoder(folder, staging, weights, report, loras)
                # int8 weights cannot be quantized again (lcm_lite.quantization.unet): the
                # UNet to quantize is exported fp16, and quantizing makes its weights int8
                unet_weights = "fp16" if quantize_unet and weights == "int8" else weights
                _export_unet(
                    folder, staging, unet_weights, report, text_length=text_length, loras=loras
                )
                _export_vae(folder, staging, weights, report, with_encoder=with_vae_encoder)
                if quantize_unet:
                    write_quantized_unet(
                        staging,
                        staging,
                        size=calibration_size,
                        samples=calibration_samples,
                        progress=_stage_lines(report, "unet"),
                    )
    except OSError as error:
        raise OutputError(f"cannot write {out_dir}: {error}") from None
    report(f"wrote {out_dir}")
    return out_dir


def _stage_lines(report: Progress, network: str) -> Callable[[str, int, int], None]:
    """A ``StageProgress`` that reports one line as each stage starts."""

    def progress(stage: str, done: int, total: int) -> None:
        if done == 0:
            report(f"{network}: {stage}")

    return progress


def _write_pipeline_files(
    folder: Path, staging: Path, report: Progress, loras: Sequence[tuple[str | Path, float]]
) -> None:
    """``model_index.json``, ``scheduler/`` and ``tokenizer/``: everything but the networks.

    A plain Stable Diffusion source (no ``time_cond_proj_dim``) keeps its pipeline class and
    scheduler, as optimum-intel exports it: the runtime runs it with an LCM-LoRA. With LoRAs
    fused (an LCM-LoRA, as diffusers' recipe), its scheduler becomes an LCMScheduler. An
    inpainting source (a 9-channel UNet) is a StableDiffusionInpaintPipeline.
    """
    is_lcm = is_latent_consistency_model(folder)
    sd_class = (
        "StableDiffusionInpaintPipeline" if is_inpainting(folder) else "StableDiffusionPipeline"
    )
    if not is_lcm and not loras:
        source_index = read_json_object(folder / "model_index.json")
        model_index = {
            **MODEL_INDEX,
            "_class_name": sd_class,
            "scheduler": source_index["scheduler"],
        }
        (staging / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
        (staging / "scheduler").mkdir()
        config = read_json_object(folder / "scheduler" / "scheduler_config.json")
        (staging / "scheduler" / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    else:
        model_index = dict(MODEL_INDEX)
        if loras:
            model_index["_lcm_lite_fused_loras"] = [f"{s}:{w:g}" for s, w in loras]
        if not is_lcm:
            model_index["_class_name"] = sd_class
        (staging / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
        _load(LCMScheduler, folder, "scheduler").save_pretrained(staging / "scheduler")
    tokenizer = _load(CLIPTokenizer, folder, "tokenizer")
    save_clip_tokenizer(tokenizer, staging / "tokenizer")
    for name, model in openvino_tokenizer_models(tokenizer).items():
        _save_ir(model, staging / "tokenizer" / name, compress_to_fp16=False)
    report("tokenizer, scheduler: written")


def _export_text_encoder(
    folder: Path,
    staging: Path,
    weights: str,
    report: Progress,
    loras: Sequence[tuple[str | Path, float]],
) -> int:
    """Export the text encoder; return its number of positions (the prompt length, 77)."""
    text_encoder = _load(CLIPTextModel, folder, "text_encoder", dtype=torch.float32)
    if loras:
        unet = _load(UNet2DConditionModel, folder, "unet", dtype=torch.float32)
        fuse_loras(loras, text_encoder, unet)
        del unet
    _export_networks(text_encoder_networks(text_encoder), staging, weights, report)
    return text_encoder.config.max_position_embeddings


def _export_unet(
    folder: Path,
    staging: Path,
    weights: str,
    report: Progress,
    *,
    text_length: int,
    loras: Sequence[tuple[str | Path, float]],
) -> None:
    """Export the UNet, with ``loras`` fused."""
    unet = _load(UNet2DConditionModel, folder, "unet", dtype=torch.float32)
    if loras:
        fuse_loras(loras, _load(CLIPTextModel, folder, "text_encoder", dtype=torch.float32), unet)
    networks = unet_networks(unet, text_length=text_length)
    _export_networks(networks, staging, weights, report)


def _export_vae(
    folder: Path, staging: Path, weights: str, report: Progress, *, with_encoder: bool
) -> None:
    vae = _load(AutoencoderKL, folder, "vae", dtype=torch.float32)
    _export_networks(vae_networks(vae, with_encoder=with_encoder), staging, weights, report)


def _export_tiny_vae(folder: Path, staging: Path, weights: str, report: Progress) -> None:
    """A tiny-VAE folder: the AutoencoderTiny's decoder and encoder, nothing else."""
    vae = _load(AutoencoderTiny, folder, None, dtype=torch.float32)
    _export_networks(vae_networks(vae, with_encoder=True), staging, weights, report)


def _export_controlnet(folder: Path, staging: Path, weights: str, report: Progress) -> None:
    """A ControlNet folder: the ControlNetModel's residuals network, nothing else. A ControlNet
    that pools its conditions (``global_pool_conditions``, the shuffle ControlNet) is refused:
    the runtime adds full-size residuals."""
    controlnet = _load(ControlNetModel, folder, None, dtype=torch.float32)
    if controlnet.config.global_pool_conditions:
        raise ModelError(f"{folder}: ControlNets with global_pool_conditions are not supported")
    _export_networks(controlnet_networks(controlnet), staging, weights, report)


def _load(component: Any, folder: Path, subfolder: str | None, **options: Any) -> Any:
    """``component.from_pretrained`` of one subfolder (or of the folder itself); any failure is a
    problem of the model."""
    try:
        return component.from_pretrained(folder, subfolder=subfolder, **options)
    except Exception as error:  # corrupt or missing files surface as many exception types
        what = f"the {subfolder} of {folder}" if subfolder else str(folder)
        raise ModelError(f"cannot load {what}: {first_line(error)}") from None


def _export_networks(
    networks: list[Network],
    staging: Path,
    weights: str,
    report: Progress,
) -> None:
    """Convert each network and write ``openvino_model.xml/.bin`` and ``config.json``."""
    for network in networks:
        started = time.monotonic()
        report(f"{network.folder}: converting")
        directory = staging / network.folder
        directory.mkdir()
        model = _to_openvino(network, weights)
        _save_ir(model, directory / "openvino_model.xml", compress_to_fp16=weights != "fp32")
        network.write_config(directory)
        report(f"{network.folder}: {weights} IR written in {time.monotonic() - started:.0f} s")


def _to_openvino(network: Network, weights: str) -> ov.Model:
    """Trace ``network`` with dynamic dimensions, name its outputs, compress for "int8"."""
    inputs = {
        name: (ov.PartialShape(shape), kind) for name, (shape, kind) in network.inputs.items()
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape-dependent Python branches
        try:
            model = ov.convert_model(network.module, example_input=network.example, input=inputs)
        except Exception as error:  # the tracer and OpenVINO's frontend raise many types
            raise ModelError(
                f"cannot convert the {network.folder} to OpenVINO: {first_line(error)} "
                f"{versions_note()}"
            ) from None
    for port, name in zip(model.outputs, network.outputs, strict=True):
        port.get_tensor().set_names({name})
    return _compress_int8(model) if weights == "int8" else model


def _compress_int8(model: ov.Model) -> ov.Model:
    """NNCF's default weight compression: INT8 asymmetric, per output channel."""
    import nncf  # imported here: it takes seconds and only int8 needs it

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bar
        return nncf.compress_weights(model)


def _save_ir(model: ov.Model, xml: Path, *, compress_to_fp16: bool) -> None:
    """``openvino.save_model``, whose write failures (RuntimeError) become OutputErrors."""
    try:
        ov.save_model(model, xml, compress_to_fp16=compress_to_fp16)
    except RuntimeError as error:
        raise OutputError(
            f"cannot write {xml.parent.name}/{xml.name}: {first_line(error)}"
        ) from None
