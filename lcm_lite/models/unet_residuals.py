"""The UNet IR given ControlNet residual inputs, as a graph edit at load (so a UNet converted
without them, as the hub's, serves unchanged).

diffusers' ``UNet2DConditionModel.forward`` adds ``down_block_additional_residuals[i]`` to the
``i``-th skip connection (``down_block_res_samples``: the output of ``conv_in``, then of each
down-block resnet and downsampler) after the down path has run, so only the up path sees the sum;
and ``mid_block_additional_residual`` to the mid block's output. In the IR, the up blocks join each
skip connection to their hidden states with a channel ``Concat`` (``torch.cat([hidden_states,
res_hidden_states], dim=1)``), the deepest skip first: the skip connections are the second inputs
of the rank-4 channel Concats in graph order, reversed, and the first one's first input is the mid
block's output. Each gets an ``Add`` of a new input there, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import openvino as ov
import openvino.opset13 as ops

from lcm_lite.errors import ModelError, UsageError

DOWN_RESIDUAL = "down_block_additional_residual_{}"
MID_RESIDUAL = "mid_block_additional_residual"


def is_residual_input(port: ov.Output) -> bool:
    """Whether ``port`` is one of the inputs ``add_residual_inputs`` adds."""
    return any(
        name == MID_RESIDUAL or name.startswith(DOWN_RESIDUAL.format(""))
        for name in port.get_names()
    )


def residual_names(count: int) -> list[str]:
    """The names of the ``count`` residual inputs (none, or the down blocks' in order, then the
    mid block's)."""
    return [DOWN_RESIDUAL.format(i) for i in range(count - 1)] + [MID_RESIDUAL] * (count > 0)


def skip_connections(model: ov.Model) -> tuple[list[ov.Input], ov.Input]:
    """The Concat inputs that take the skip connections, in diffusers' ``down_block_res_samples``
    order, and the one that takes the mid block's output."""
    joins = [
        node
        for node in model.get_ordered_ops()
        if node.get_type_name() == "Concat"
        and node.get_output_partial_shape(0).rank.is_static
        and node.get_output_partial_shape(0).rank.get_length() == 4
        and node.get_attributes()["axis"] in (1, -3)
        and node.get_input_size() == 2
    ]
    if not joins:
        raise ModelError("the UNet IR has no skip connections (channel Concats): not a UNet?")
    skips = [join.input(1) for join in reversed(joins)]
    return skips, joins[0].input(0)


def add_residual_inputs(model: ov.Model, shapes: Sequence[tuple[int, ...]]) -> None:
    """Give ``model`` (a UNet IR) one input per skip connection (``DOWN_RESIDUAL``) and one for
    the mid block (``MID_RESIDUAL``), of ``shapes`` (the ControlNet's outputs, down blocks' then
    the mid block's), each added where diffusers adds it. A UsageError when the ControlNet's
    residuals do not fit the UNet (a ControlNet of another base model)."""
    skips, mid = skip_connections(model)
    targets = [*skips, mid]
    if len(shapes) != len(targets):
        raise UsageError(
            f"the ControlNet gives {len(shapes)} residuals, the UNet has {len(skips)} skip "
            "connections and a mid block: a ControlNet for another base model"
        )
    names = residual_names(len(targets))
    parameters = []
    for target, shape, name in zip(targets, shapes, names, strict=True):
        channels = target.get_partial_shape()[1]
        if channels.is_static and channels.get_length() != shape[1]:
            raise UsageError(
                f"the ControlNet's {name} has {shape[1]} channels, the UNet's has "
                f"{channels.get_length()}: a ControlNet for another base model"
            )
        source = target.get_source_output()
        parameter = ops.parameter(list(shape), source.get_element_type(), name=name)
        parameter.output(0).get_tensor().set_names({name})
        target.replace_source_output(ops.add(source, parameter).output(0))
        parameters.append(parameter)
    model.add_parameters(parameters)
    model.validate_nodes_and_infer_types()
