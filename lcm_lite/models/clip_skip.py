"""diffusers' ``clip_skip`` on a text encoder IR that only outputs ``last_hidden_state``: the
graph is given a new output, the hidden state ``clip_skip`` layers before the last put through
the final layer norm (diffusers: ``hidden_states[-(clip_skip + 1)]`` then
``final_layer_norm``).

In the IR (OpenVINO's PyTorch and ONNX front ends), each of CLIP's layer norms is an MVN node,
followed by the norm's scale and shift (Multiply, Add; dropped when they are 1 and 0). A CLIP
encoder of N layers has 2N + 1 of them, in order: each layer's two, then the final one; the input
of layer ``i``'s first is ``hidden_states[i]``, the final one's is ``hidden_states[N]``. The new
output is a copy of the final norm applied to ``hidden_states[N - clip_skip]``. A graph that does
not have this shape is refused: nothing is guessed. Every folder exported by ``lcm-lite-convert``
and optimum-intel has it (the hub's int8 model too: NNCF compresses MatMul weights, not norms).
"""

from __future__ import annotations

import openvino as ov

from lcm_lite.errors import ModelError


def output_hidden_state(model: ov.Model, clip_skip: int, num_layers: int) -> None:
    """Make ``model``'s only output the final layer norm of ``hidden_states[num_layers -
    clip_skip]``; a ModelError when the graph is not a CLIP encoder of ``num_layers`` layers."""
    norms = [op for op in model.get_ordered_ops() if op.get_type_name() == "MVN"]
    if len(norms) != 2 * num_layers + 1:
        raise ModelError(
            f"clip_skip: cannot find the {num_layers} layers of this text encoder in its IR "
            f"({len(norms)} layer norms, expected {2 * num_layers + 1}); export the model again "
            "with lcm-lite-convert, or leave clip_skip unset"
        )
    final = norms[-1]
    layer = num_layers - clip_skip
    hidden_state = (norms[2 * layer] if layer < num_layers else final).input_value(0)
    normalized = ov.opset13.mvn(
        hidden_state,
        final.input_value(1),
        final.get_attributes()["normalize_variance"],
        final.get_attributes()["eps"],
        final.get_attributes()["eps_mode"].lower(),
    ).output(0)
    for op_type, parameter, path_index in _scale_and_shift(model.outputs[0], final):
        inputs = [parameter, parameter]
        inputs[path_index] = normalized
        make = ov.opset13.multiply if op_type == "Multiply" else ov.opset13.add
        normalized = make(*inputs).output(0)
    old_results = list(model.get_results())
    model.add_results([ov.opset13.result(normalized)])
    for result in old_results:
        model.remove_result(result)


def _scale_and_shift(output: ov.Output, final: ov.Node) -> list[tuple[str, ov.Output, int]]:
    """The Multiply / Add nodes between ``final`` (the last MVN) and ``output``
    (``last_hidden_state``), from the norm on: (type, the scale or shift, the index of the input
    that comes from the norm)."""
    chain = []
    node = output.get_node().input_value(0).get_node()
    while node.get_name() != final.get_name():
        sources = [node.input_value(index) for index in range(node.get_input_size())]
        constant = [_is_constant(source.get_node()) for source in sources]
        if node.get_type_name() not in ("Multiply", "Add") or sorted(constant) != [False, True]:
            raise ModelError(
                "clip_skip: the text encoder's last_hidden_state is not its final layer norm's "
                f"output (found {node.get_type_name()}); export the model again with "
                "lcm-lite-convert, or leave clip_skip unset"
            )
        path_index = constant.index(False)
        chain.append((node.get_type_name(), sources[1 - path_index], path_index))
        node = sources[path_index].get_node()
    return chain[::-1]


def _is_constant(node: ov.Node) -> bool:
    """A constant, or one decompressed (an f16 constant converted to f32)."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"
