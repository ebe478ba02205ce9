"""LoRA adapters on the OpenVINO networks, applied as diffusers' ``load_lora_weights`` applies them.

A LoRA (Hu et al. 2021) adds to a layer ``y = W x`` a low-rank term: ``y = W x + s B (A x)``,
``A`` = ``lora_down`` / ``lora_A`` (rank x in, or rank x in x kh x kw for a convolution, with the
layer's stride and padding), ``B`` = ``lora_up`` / ``lora_B`` (out x rank, a 1x1 convolution) and
``s = weight * alpha / rank`` (alpha = rank when the file has none; when a network's alphas
differ, diffusers gives its most common one to the layers without one and to kohya's attention
projections, ``_most_common_alphas``), which is PEFT's
``lora_B(lora_A(x)) * scaling`` inside diffusers after ``set_adapters(..., adapter_weights)``.
Several adapters on one layer add up; their ranks are concatenated into one branch.

The branch is added to the IR (``apply_adapters``): each touched ``MatMul``/``Convolution``, found
by the diffusers module path its friendly name carries (``__module.unet.down_blocks.0.attentions.0
.transformer_blocks.0.attn1.to_q/aten::linear/MatMul``), gets ``+ ((x A^T) * s) B^T`` beside it.
The base weights stay as they are (fp16 or int8), so the memory cost is the adapter's own size.

Files (``.safetensors``, read with safetensors' NumPy API; the ``lora`` extra):
- kohya / A1111: ``lora_unet_<module_with_underscores>.lora_down.weight``, ``.lora_up.weight``,
  ``.alpha``; ``lora_te_...`` (``lora_te1_``) for the text encoder; the LDM block names
  ``input_blocks/middle_block/output_blocks`` mapped as diffusers'
  ``_maybe_map_sgm_blocks_to_diffusers`` and ``_convert_unet_lora_key`` map them; LoCon 3x3
  convolutions.
- diffusers / PEFT: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (or ``.lora.down/up``),
  ``text_encoder.<module>...``; alphas from ``<module>.alpha`` tensors or the
  ``lora_adapter_metadata`` header diffusers writes (``lora_alpha``, ``alpha_pattern``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from lcm_lite.errors import ModelError, UsageError
from lcm_lite.extras import require_extra
from lcm_lite.models.configs import UNetConfig
from lcm_lite.models.hub import looks_like_a_path, resolve

log = logging.getLogger("lcm_lite")

NETWORKS = {"unet": "UNet", "text_encoder": "text encoder"}
DEFAULT_HUB_FILE = "pytorch_lora_weights.safetensors"

# (prefix, network) of each file format's keys; longest first.
_PREFIXES = (
    ("lora_unet_", "unet"),
    ("lora_te1_", "text_encoder"),
    ("lora_te_", "text_encoder"),
    ("unet.", "unet"),
    ("text_encoder.", "text_encoder"),
)
_PAIR_SUFFIXES = (
    (".lora_down.weight", ".lora_up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
)
# kohya names diffusers' ``_convert_unet_lora_key`` cannot map back (it reads the LCM UNet's
# ``time_embedding_cond_proj`` as ``time.embedding.cond.proj``): diffusers skips them, warning.
_DIFFUSERS_SKIPS = ("time_embedding_cond_proj",)
# kohya attention projections whose own alpha diffusers loses: its key conversion renames them
# ``to_q_lora.down`` (no ``.lora.``), so their ``alpha_pattern`` entry matches no module and PEFT
# gives them the network's ``lora_alpha`` (the most common alpha).
_KOHYA_SHARED_ALPHA = re.compile(r"(attn[12]_to_(q|k|v|out_0)|self_attn_(q|k|v|out)_proj)$")
_WRAPPERS = ("unet", "text_encoder", "text_model", "model")  # leading names of an IR module path
_DECOMPRESSION = {
    "Constant",
    "Convert",
    "Subtract",
    "Multiply",
    "Reshape",
    "Transpose",
    "Unsqueeze",
}


@dataclass(frozen=True)
class LayerPair:
    """One layer's ``A`` and ``B`` in a file: their keys, the rank and the alpha."""

    down_key: str
    up_key: str
    rank: int
    alpha: float


@dataclass(frozen=True)
class Adapter:
    """One LoRA file and its weight: for each network, the layers it changes, by the underscored
    diffusers module path (``down_blocks_0_attentions_0_proj_in``)."""

    source: str
    path: Path
    weight: float
    digest: str
    layers: dict[str, dict[str, LayerPair]]

    def touches(self, network: str) -> bool:
        return bool(self.layers[network])

    def scale(self, pair: LayerPair) -> float:
        """``weight * alpha / rank``: PEFT's ``scaling`` times the ``set_adapters`` weight."""
        return self.weight * pair.alpha / pair.rank


def open_adapters(
    loras: Sequence[tuple[str | Path, float]] | None, unet: UNetConfig
) -> list[Adapter]:
    """Find, digest and index each ``(file or hub id, weight)`` for the UNet ``unet`` describes
    (its ``layers_per_block`` places kohya's LDM block names); the tensors are read later, by
    ``apply_adapters``, only when a network is compiled."""
    adapters = []
    for item in loras or ():
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise UsageError(f"loras must be (file or hub id, weight) pairs, got {item!r:.60}")
        source, weight = item
        if (
            not isinstance(weight, (int, float))
            or isinstance(weight, bool)
            or not math.isfinite(weight)
        ):
            raise UsageError(f"the weight of LoRA {source} must be a finite number, got {weight!r}")
        adapters.append(_open_adapter(str(source), float(weight), unet))
    return adapters


def adapters_request(adapters: Sequence[Adapter], network: str) -> tuple[tuple[str, float], ...]:
    """What the compiled ``network`` depends on: each touching adapter's digest and weight."""
    return tuple((a.digest, a.weight) for a in adapters if a.touches(network))


def adapters_transform(
    adapters: Sequence[Adapter], network: str
) -> Callable[[ov.Model], None] | None:
    """The ``Compiler.compile`` transform adding ``adapters`` to ``network``, or None."""
    touching = [a for a in adapters if a.touches(network)]
    if not touching:
        return None
    return lambda model: apply_adapters(model, touching, network)


def apply_adapters(model: ov.Model, adapters: Sequence[Adapter], network: str) -> None:
    """Add each adapter's low-rank branch to the layers of ``model`` (the ``network`` IR) it names.

    Raises ModelError naming the first tensor that matches no layer, or whose shape does not fit.
    """
    layers = _ir_layers(model)
    branches: dict[str, list[tuple[np.ndarray, np.ndarray, float, str]]] = {}
    safetensors = _safetensors()
    for adapter in adapters:
        pairs = adapter.layers[network]
        unmatched = [pair.down_key for module, pair in pairs.items() if module not in layers]
        if unmatched:
            raise ModelError(
                f"LoRA {adapter.source}: {len(unmatched)} tensor(s) match no layer of the "
                f"{NETWORKS[network]}, e.g. {unmatched[0]} (a LoRA for another model?)"
            )
        with safetensors.safe_open(adapter.path, framework="numpy") as file:
            for module, pair in pairs.items():
                down, up = file.get_tensor(pair.down_key), file.get_tensor(pair.up_key)
                branches.setdefault(module, []).append(
                    (down, up, adapter.scale(pair), f"LoRA {adapter.source}: {pair.down_key}")
                )
    for module, parts in branches.items():
        for node in layers[module]:
            _add_branch(node, parts)


def _open_adapter(source: str, weight: float, unet: UNetConfig) -> Adapter:
    path = resolve_lora_file(source)
    safetensors = _safetensors()
    try:
        with safetensors.safe_open(path, framework="numpy") as file:
            keys = list(file.keys())
            metadata = file.metadata() or {}
            alphas = {
                k: float(file.get_tensor(k).reshape(-1)[0]) for k in keys if k.endswith(".alpha")
            }
            shapes = {k: tuple(file.get_slice(k).get_shape()) for k in keys}
    except (OSError, ValueError, RuntimeError, safetensors.SafetensorError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"LoRA {source} is not a safetensors file: {message}") from None
    layers = _index_layers(source, keys, shapes, alphas, metadata, unet)
    return Adapter(source, path, weight, _digest(path), layers)


def resolve_lora_file(source: str) -> Path:
    """A local ``.safetensors`` file; a folder holding one; or a hub id ``owner/name`` (its
    ``pytorch_lora_weights.safetensors``) or ``owner/name/file.safetensors``, downloaded once."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        preferred = [f for f in found if f.name == DEFAULT_HUB_FILE]
        if len(preferred or found) != 1:
            raise UsageError(f"LoRA folder {source} must hold one .safetensors file")
        return (preferred or found)[0]
    parts = source.split("/")
    if looks_like_a_path(source) or len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"LoRA not found: {source} (give a .safetensors file or a hub id)")
    filename = parts[2] if len(parts) == 3 else DEFAULT_HUB_FILE
    snapshot = resolve(
        "/".join(parts[:2]),
        None,
        what="LoRA",
        files=[filename],
        option="--lora",
        alternative="download the .safetensors file and pass its path",
    )
    if not (snapshot / filename).is_file():
        raise ModelError(f"LoRA {source}: the hub repository has no {filename}")
    return snapshot / filename


def _safetensors():  # noqa: ANN202 - the module, imported only when an adapter is used
    require_extra("lora", ["safetensors"], "a LoRA adapter")
    import safetensors

    return safetensors


def _digest(path: Path) -> str:
    """SHA-256 of the file's contents (the compiled networks' cache key)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _index_layers(
    source: str,
    keys: list[str],
    shapes: dict[str, tuple[int, ...]],
    alphas: dict[str, float],
    metadata: dict[str, str],
    unet: UNetConfig,
) -> dict[str, dict[str, LayerPair]]:
    """Pair each ``A`` with its ``B`` and alpha, under the network and module it changes."""
    layers: dict[str, dict[str, LayerPair]] = {network: {} for network in NETWORKS}
    default_alphas = _metadata_alphas(source, metadata)
    common_alphas = _most_common_alphas(source, keys, alphas, unet)
    paired = set(alphas)
    skipped = 0
    for key in keys:
        suffixes = next(((d, u) for d, u in _PAIR_SUFFIXES if key.endswith(d)), None)
        if suffixes is None:
            continue
        stem = key[: -len(suffixes[0])]
        up_key = stem + suffixes[1]
        if up_key not in shapes:
            raise ModelError(f"LoRA {source}: {key} has no {suffixes[1]} partner")
        paired.update((key, up_key))
        network, module = _module_of(source, stem, unet)
        if stem.startswith("lora_unet_") and module in _DIFFUSERS_SKIPS:
            skipped += 1
            continue
        rank = shapes[key][0]
        if len(shapes[key]) not in (2, 4) or shapes[up_key][1:2] != (rank,):
            raise ModelError(
                f"LoRA {source}: {key} {list(shapes[key])} and its up weight "
                f"{list(shapes[up_key])} are not a rank-{rank} pair"
            )
        alpha = alphas.get(stem + ".alpha")
        if alpha is None or (stem.startswith("lora_") and _KOHYA_SHARED_ALPHA.search(module)):
            alpha = common_alphas.get(network)
        if alpha is None:
            alpha = _pattern_alpha(default_alphas.get(network), module, rank)
        layers[network][module.replace(".", "_")] = LayerPair(key, up_key, rank, alpha)
    if skipped:
        log.warning(
            "LoRA %s: %d layer(s) skipped, as diffusers skips them (%s)",
            source,
            skipped,
            ", ".join(_DIFFUSERS_SKIPS),
        )
    if not any(layers.values()):
        raise ModelError(
            f"LoRA {source} is not a LoRA for Stable Diffusion 1.5: none of its {len(keys)} "
            "tensors is a lora_down/lora_up or lora_A/lora_B weight of a UNet or text encoder"
        )
    leftover = [k for k in keys if k not in paired]
    if leftover:
        raise ModelError(
            f"LoRA {source}: {len(leftover)} tensor(s) are not LoRA weights lcm-lite can apply, "
            f"e.g. {leftover[0]} (DoRA, LoHa and LoKr adapters are not supported)"
        )
    return layers


def _most_common_alphas(
    source: str, keys: list[str], alphas: dict[str, float], unet: UNetConfig
) -> dict[str, float]:
    """Per network, the most common of the file's alphas for that network (ties: the first in key
    order), which diffusers' ``get_peft_kwargs`` makes ``lora_alpha`` (the others go in
    ``alpha_pattern``): the alpha of its layers that have none, and of the kohya attention
    projections (``_KOHYA_SHARED_ALPHA``). Layers diffusers then skips count too: their alphas
    reach ``network_alphas`` all the same."""
    found: dict[str, list[float]] = {}
    for key in keys:
        if key.endswith(".alpha"):
            network, _ = _module_of(source, key.removesuffix(".alpha"), unet)
            found.setdefault(network, []).append(alphas[key])
    return {network: Counter(values).most_common(1)[0][0] for network, values in found.items()}


def _module_of(source: str, stem: str, unet: UNetConfig) -> tuple[str, str]:
    """(network, diffusers module path) of a key's stem, as diffusers' key conversion gives."""
    prefix, network = next(((p, n) for p, n in _PREFIXES if stem.startswith(p)), ("", ""))
    module = stem[len(prefix) :]
    if not prefix:
        raise ModelError(
            f"LoRA {source}: {stem} names no UNet or text encoder layer (a LoRA for SDXL, Flux, "
            "or another architecture? lcm-lite applies Stable Diffusion 1.5 LoRAs)"
        )
    if prefix == "lora_unet_":
        module = _ldm_to_diffusers(module, unet.layers_per_block)
    if network == "text_encoder":
        module = module.removeprefix("text_model.").removeprefix("text_model_")
    return network, module


_LDM_INNER = {  # LDM ResBlock/Downsample names -> diffusers (``_convert_unet_lora_key``)
    "in_layers_2": "conv1",
    "out_layers_3": "conv2",
    "emb_layers_1": "time_emb_proj",
    "skip_connection": "conv_shortcut",
}
_LDM_TOP = {
    "input_blocks_0_0": "conv_in",
    "out_2": "conv_out",
    "time_embed_0": "time_embedding_linear_1",
    "time_embed_2": "time_embedding_linear_2",
}


def _ldm_to_diffusers(name: str, layers_per_block: int) -> str:
    """A kohya name in LDM (A1111 checkpoint) terms -> the diffusers one, underscored: SD 1.5's
    ``input_blocks.i`` is down block ``(i-1) // (lpb+1)``, ``middle_block`` resnet/attention/resnet,
    ``output_blocks.i`` up block ``i // (lpb+1)``, as ``_maybe_map_sgm_blocks_to_diffusers``."""
    for ldm, diffusers in _LDM_TOP.items():
        if name == ldm or name.startswith(ldm + "_"):
            return diffusers + name[len(ldm) :]
    match = re.fullmatch(r"(input_blocks|middle_block|output_blocks)_(\d+)_(?:(\d+)_)?(.+)", name)
    if match is None:
        return name
    kind, block, inner, rest = match[1], int(match[2]), int(match[3] or 0), match[4]
    for ldm, diffusers in _LDM_INNER.items():
        rest = re.sub(rf"(^|_){ldm}$", rf"\g<1>{diffusers}", rest)
    per_block = layers_per_block + 1
    if kind == "middle_block":
        return f"mid_block_{('resnets_0', 'attentions_0', 'resnets_1')[min(block, 2)]}_{rest}"
    if kind == "input_blocks":
        block_id, layer = (block - 1) // per_block, (block - 1) % per_block
        if rest == "op":
            return f"down_blocks_{block_id}_downsamplers_0_conv"
        return f"down_blocks_{block_id}_{('resnets', 'attentions')[inner]}_{layer}_{rest}"
    block_id, layer = block // per_block, block % per_block
    if rest == "conv":  # the Upsample closing an output block
        return f"up_blocks_{block_id}_upsamplers_0_conv"
    return f"up_blocks_{block_id}_{('resnets', 'attentions')[inner]}_{layer}_{rest}"


def _metadata_alphas(source: str, metadata: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per network, ``lora_alpha`` and ``alpha_pattern`` of the PEFT config diffusers' ``save_lora_
    weights`` stores in the header (``lora_adapter_metadata``: ``{"unet.lora_alpha": 8, ...}``)."""
    if "lora_adapter_metadata" not in metadata:
        return {}
    try:
        packed = json.loads(metadata["lora_adapter_metadata"])
    except json.JSONDecodeError:
        raise ModelError(f"LoRA {source}: its lora_adapter_metadata is not JSON") from None
    configs: dict[str, dict[str, Any]] = {}
    for key, value in packed.items():
        network, _, field = key.partition(".")
        configs.setdefault(network, {})[field] = value
    return configs


def _pattern_alpha(config: dict[str, Any] | None, module: str, rank: int) -> float:
    """The alpha PEFT gives ``module``: its ``alpha_pattern`` entry, else ``lora_alpha``, else the
    rank (no alpha: scale 1, as diffusers' ``get_peft_kwargs``)."""
    if not config:
        return float(rank)
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if module == pattern or module.endswith("." + pattern):
            return float(alpha)
    return float(config.get("lora_alpha", rank))


def _ir_layers(model: ov.Model) -> dict[str, list[ov.Node]]:
    """The IR's MatMul/Convolution nodes with constant weights, by underscored module path."""
    layers: dict[str, list[ov.Node]] = {}
    for node in model.get_ordered_ops():
        if node.get_type_name() not in ("MatMul", "Convolution"):
            continue
        if not _is_constant(node.input_value(1).get_node()):
            continue
        name = node.get_friendly_name()
        if (
            "/aten::" in name
        ):  # torch frontend: __module.unet.down_blocks.0.resnets.0.conv1/aten::..
            path = name.split("/aten::")[0].removeprefix("__module.").split(".")
        else:  # ONNX-style: /down_blocks.0/resnets.0/conv1/Conv
            path = ".".join(name.strip("/").split("/")[:-1]).split(".")
        while len(path) > 1 and path[0] in _WRAPPERS:
            path = path[1:]
        layers.setdefault("_".join(path), []).append(node)
    return layers


def _is_constant(node: ov.Node, depth: int = 6) -> bool:
    """A weight: a Constant, or a decompression chain of constants (fp16 Convert, int8 ones)."""
    if node.get_type_name() == "Constant":
        return True
    return (
        depth > 0
        and node.get_type_name() in _DECOMPRESSION
        and all(_is_constant(i.get_node(), depth - 1) for i in node.input_values())
    )


def _add_branch(node: ov.Node, parts: list[tuple[np.ndarray, np.ndarray, float, str]]) -> None:
    """Add ``((x A^T) * s) B^T`` (a MatMul) or ``B * ((A * x) * s)`` (a Convolution, ``A`` with
    the layer's stride, padding and dilation) to ``node``'s output."""
    weight_shape = tuple(node.input_value(1).get_partial_shape().to_shape())
    is_conv = node.get_type_name() == "Convolution"
    attributes = node.get_attributes()
    if is_conv:
        out_features, down_shape = weight_shape[0], (weight_shape[1], *weight_shape[2:])
    else:
        if attributes["transpose_a"] or len(weight_shape) != 2:
            raise ModelError(f"cannot add a LoRA to {node.get_friendly_name()}")
        transposed = attributes["transpose_b"]
        out_features = weight_shape[0] if transposed else weight_shape[1]
        down_shape = (weight_shape[1] if transposed else weight_shape[0],)
    downs, ups, scales = [], [], []
    for down, up, scale, name in parts:
        rank = down.shape[0]
        if is_conv and down.ndim == 2 and down_shape[1:] == (1, 1):
            down, up = down[:, :, None, None], up.reshape(*up.shape, 1, 1)
        if not is_conv and down.ndim == 4 and down.shape[2:] == (1, 1):
            down, up = down[:, :, 0, 0], up[:, :, 0, 0]
        up_shape = (out_features, rank, 1, 1) if is_conv else (out_features, rank)
        if down.shape[1:] != down_shape or up.shape != up_shape:
            raise ModelError(
                f"{name} does not fit the model: down {list(down.shape)}, up {list(up.shape)}, "
                f"layer weight {list(weight_shape)} (a LoRA for another model?)"
            )
        downs.append(down)
        ups.append(up)
        scales.append(np.full(rank, scale, np.float32))
    activation = node.input_value(0)
    dtype = activation.get_element_type()
    down = _constant(np.concatenate(downs, axis=0), dtype)
    up = _constant(np.concatenate(ups, axis=1), dtype)
    scale = np.concatenate(scales)
    if is_conv:
        hidden = ops.convolution(
            activation,
            down,
            attributes["strides"],
            attributes["pads_begin"],
            attributes["pads_end"],
            attributes["dilations"],
            attributes["auto_pad"],
        )
        hidden = ops.multiply(hidden, ops.constant(scale.reshape(1, -1, 1, 1)))
        delta = ops.convolution(hidden, up, [1, 1], [0, 0], [0, 0], [1, 1])
    else:
        hidden = ops.matmul(activation, down, False, True)
        hidden = ops.multiply(hidden, ops.constant(scale))
        delta = ops.matmul(hidden, up, False, True)
    targets = list(node.output(0).get_target_inputs())
    total = ops.add(node.output(0), delta)
    for target in targets:
        target.replace_source_output(total.output(0))


def _constant(array: np.ndarray, dtype: ov.Type) -> ov.Output:
    """The array as a constant of its own dtype (fp16 stays fp16: the adapter's size), converted
    to the activation's type."""
    if array.dtype not in (np.float16, np.float32):
        array = array.astype(np.float32)
    constant = ops.constant(np.ascontiguousarray(array))
    return (
        constant.output(0)
        if constant.get_element_type() == dtype
        else ops.convert(constant, dtype).output(0)
    )
