"""Folders written by other exporters load too: inputs are bound by role, not by name alone."""

from __future__ import annotations

import shutil

import numpy as np
import openvino as ov
import pytest

from lcm_lite import LCMPipeline, ModelError
from lcm_lite.models.networks import bind_unet_inputs


@pytest.fixture(scope="module")
def reference_image(f32_pipe):
    return np.asarray(f32_pipe("a red cube", steps=2, width=64, height=64, seed=3)[0])


def _rewrite_unet(folder, change):
    """Read the UNet IR, let ``change(model)`` return a new one, write it back in place."""
    xml = folder / "unet" / "openvino_model.xml"
    model = change(ov.Core().read_model(xml))
    ov.save_model(model, folder / "unet" / "new.xml", compress_to_fp16=False)
    (folder / "unet" / "new.xml").replace(xml)
    (folder / "unet" / "new.bin").replace(xml.with_suffix(".bin"))


def _unnamed_timestep(model):
    """As optimum-intel has been seen to export: the timestep input named ``57``."""
    bind_unet_inputs(model)  # it is named now
    port = next(p for p in model.inputs if "timestep" in p.get_names())
    port.get_tensor().set_names({"57"})
    return model


def _float_timestep(model):
    """A float32 timestep input, converted to the graph's int64 inside the model."""
    processor = ov.preprocess.PrePostProcessor(model)
    processor.input("timestep").tensor().set_element_type(ov.Type.f32)
    return processor.build()


@pytest.mark.parametrize("change", [_unnamed_timestep, _float_timestep])
def test_a_unet_whose_timestep_is_unnamed_or_float_gives_the_same_image(
    tiny_ov_dir, tmp_path, reference_image, change
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_ov_dir, folder)
    _rewrite_unet(folder, change)
    pipe = LCMPipeline.from_pretrained(folder, precision="f32")
    image = np.asarray(pipe("a red cube", steps=2, width=64, height=64, seed=3)[0])
    assert np.abs(image.astype(int) - reference_image.astype(int)).max() <= 1


def test_a_tokenizer_of_vocab_and_merges_alone_gives_the_same_image(
    tiny_ov_dir, tmp_path, reference_image
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_ov_dir, folder)
    (folder / "tokenizer" / "tokenizer.json").unlink()
    pipe = LCMPipeline.from_pretrained(folder, precision="f32")
    image = np.asarray(pipe("a red cube", steps=2, width=64, height=64, seed=3)[0])
    assert np.array_equal(image, reference_image)


def _unet_with_inputs(*shapes):
    """A stand-in UNet whose inputs have these shapes and meaningless names."""
    inputs = [ov.opset13.parameter(shape, ov.Type.f32) for shape in shapes]
    for index, node in enumerate(inputs):
        node.output(0).get_tensor().set_names({str(50 + index)})
    outputs = [ov.opset13.multiply(node, node) for node in inputs]
    return ov.Model(outputs, inputs, "unet")


def test_unnamed_inputs_are_bound_by_their_rank():
    model = _unet_with_inputs([1], [-1, 77, 32], [-1, 32], [-1, 4, -1, -1])
    ports = bind_unet_inputs(model)
    assert (ports.timestep, ports.encoder_hidden_states, ports.timestep_cond, ports.sample) == (
        0,
        1,
        2,
        3,
    )


def test_inputs_whose_role_cannot_be_told_are_a_model_error():
    with pytest.raises(ModelError, match="cannot tell the role of UNet input"):
        bind_unet_inputs(_unet_with_inputs([1], [-1, 77, 32], [-1, 4, 8, 8], [-1, 4, 8, 8]))
    with pytest.raises(ModelError, match="has no encoder_hidden_states input"):
        bind_unet_inputs(_unet_with_inputs([1], [-1, 4, 8, 8]))


def test_a_plain_stable_diffusion_unet_binds_without_timestep_cond():
    ports = bind_unet_inputs(_unet_with_inputs([1], [-1, 77, 32], [-1, 4, 8, 8]))
    assert ports.timestep_cond is None and ports.sample == 2
