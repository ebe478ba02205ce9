"""LoRA adapters on the OpenVINO networks, applied as diffusers' ``load_lora_weights`` applies them.

A LoRA (Hu et al. 2021) adds to a layer ``y = W x`` a low-rank term: ``y = W x + s B (A x)``,
``A`` = ``lora_down`` / ``lora_A`` (rank x in, or rank x in x kh x kw for a convolution, with the
layer's stride and padding), ``B`` = ``lora_up`` / ``lora_B`` (out x rank, a 1x1 convolution) and
``s = weight * alpha / rank`` (alpha = rank when the file has none; when a network's alphas
differ, diffusers gives its most common one to the layers without one and to kohya's attention
projections, ``_most_common_alphas``), which is PEFT's
``lora_B(lora_A(x)) * scaling`` inside diffusers after ``set_adapters(..., adapter_weights)``.
Several adapters on one layer add up; their ranks are concatenated into one branch.

The branch is added to the IR when a network compiles (``models.lora_branches``); this module
reads the files: which layers each adapter changes, with which rank and alpha.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _open_adapter(source: str, weight: float, unet: UNetConfig) -> Adapter:
    path = resolve_lora_file(source)
    safetensors = safetensors_module()
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


def safetensors_module():  # noqa: ANN202 - the module, imported only when an adapter is used
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
