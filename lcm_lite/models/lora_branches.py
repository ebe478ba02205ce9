"""LoRA adapters added to an OpenVINO network's IR (``models.lora`` reads the files): each
touched ``MatMul``/``Convolution``, found by the diffusers module path its friendly name carries
(``__module.unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q/aten::linear/MatMul``),
gets ``+ ((x A^T) * s) B^T`` beside it, with ``s = weight * alpha / rank`` (PEFT's ``scaling``
after diffusers' ``set_adapters``). The base weights stay as they are (fp16 or int8), so the
memory cost is the adapter's own size; several adapters on one layer add up, their ranks
concatenated into one branch.

Each adapter's ``weight`` is either compiled in as a constant (``Branches(runtime=False)``: a new
blend is a new compile) or read from the network's extra input ``lora_weights`` (one float per
adapter, in load order: ``Branches(runtime=True)``), so that a blend changes per call with no
compile; a weight of 0 then multiplies the adapter's branch by 0, which adds exactly nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from lcm_lite.errors import ModelError
from lcm_lite.models.lora import NETWORKS, Adapter, safetensors_module

LORA_WEIGHTS_INPUT = "lora_weights"  # the runtime weights' input: (number of adapters,) float32
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
class Branches:
    """The LoRA adapters a network compiles with, and how their weights enter it: compiled in
    (``runtime`` False) or as the ``lora_weights`` input (``runtime`` True)."""

    adapters: tuple[Adapter, ...] = ()
    runtime: bool = False

    def touching(self, network: str) -> list[tuple[int, Adapter]]:
        """The adapters that change ``network``, with their index in the weights input."""
        return [(i, a) for i, a in enumerate(self.adapters) if a.touches(network)]

    def request(self, network: str) -> tuple[object, ...]:
        """What the compiled ``network`` depends on: each touching adapter's digest and, compiled
        in, its weight; at run time, its index in the weights input instead."""
        return (
            ("runtime", len(self.adapters)) if self.runtime else (),
            *((a.digest, i if self.runtime else a.weight) for i, a in self.touching(network)),
        )

    def transform(self, network: str) -> Callable[[ov.Model], None] | None:
        """The ``Compiler.compile`` transform adding the adapters to ``network``, or None."""
        if not self.touching(network):
            return None
        return lambda model: apply_adapters(model, self, network)


def apply_adapters(model: ov.Model, branches: Branches, network: str) -> None:
    """Add each adapter's low-rank branch to the layers of ``model`` (the ``network`` IR) it
    names; with runtime weights, add the ``lora_weights`` input they read.

    Raises ModelError naming the first tensor that matches no layer, or whose shape does not fit.
    """
    layers = _ir_layers(model)
    weights = None
    if branches.runtime:
        parameter = ops.parameter([len(branches.adapters)], np.float32, name=LORA_WEIGHTS_INPUT)
        parameter.output(0).get_tensor().set_names({LORA_WEIGHTS_INPUT})
        model.add_parameters([parameter])
        weights = parameter.output(0)
    parts_of: dict[str, list[_Part]] = {}
    safetensors = safetensors_module()
    for index, adapter in branches.touching(network):
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
                parts_of.setdefault(module, []).append(
                    _Part(
                        down,
                        up,
                        index,
                        pair.alpha / pair.rank if branches.runtime else adapter.scale(pair),
                        f"LoRA {adapter.source}: {pair.down_key}",
                    )
                )
    for module, parts in parts_of.items():
        for node in layers[module]:
            _add_branch(node, parts, weights)


@dataclass(frozen=True)
class _Part:
    """One adapter's factors on one layer: ``A``, ``B``, its index in the weights input and its
    scale (``alpha / rank``, times the weight when the weight is compiled in)."""

    down: np.ndarray
    up: np.ndarray
    index: int
    scale: float
    name: str


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


def _add_branch(node: ov.Node, parts: list[_Part], weights: ov.Output | None) -> None:
    """Add ``((x A^T) * s) B^T`` (a MatMul) or ``B * ((A * x) * s)`` (a Convolution, ``A`` with
    the layer's stride, padding and dilation) to ``node``'s output; ``s`` holds each rank
    column's scale, times its adapter's entry of ``weights`` (the runtime input) if given."""
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
    downs, ups, scales, indices = [], [], [], []
    for part in parts:
        down, up, rank = part.down, part.up, part.down.shape[0]
        if is_conv and down.ndim == 2 and down_shape[1:] == (1, 1):
            down, up = down[:, :, None, None], up.reshape(*up.shape, 1, 1)
        if not is_conv and down.ndim == 4 and down.shape[2:] == (1, 1):
            down, up = down[:, :, 0, 0], up[:, :, 0, 0]
        up_shape = (out_features, rank, 1, 1) if is_conv else (out_features, rank)
        if down.shape[1:] != down_shape or up.shape != up_shape:
            raise ModelError(
                f"{part.name} does not fit the model: down {list(down.shape)}, up "
                f"{list(up.shape)}, layer weight {list(weight_shape)} (a LoRA for another model?)"
            )
        downs.append(down)
        ups.append(up)
        scales.append(np.full(rank, part.scale, np.float32))
        indices.append(np.full(rank, part.index, np.int32))
    activation = node.input_value(0)
    dtype = activation.get_element_type()
    down = _constant(np.concatenate(downs, axis=0), dtype)
    up = _constant(np.concatenate(ups, axis=1), dtype)
    scale = ops.constant(np.concatenate(scales)).output(0)
    if weights is not None:  # each column's adapter weight, gathered from the input
        scale = ops.multiply(scale, ops.gather(weights, np.concatenate(indices), 0)).output(0)
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
        hidden = ops.multiply(hidden, ops.reshape(scale, [1, -1, 1, 1], special_zero=False))
        delta = ops.convolution(hidden, up, [1, 1], [0, 0], [0, 0], [1, 1])
    else:
        hidden = ops.matmul(activation, down, False, True)
        hidden = ops.multiply(hidden, scale)
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
