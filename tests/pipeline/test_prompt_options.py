"""prompt_weighting, clip_skip and prompt_embeds through the pipeline: the images they give, what
the metadata records, and the one-line errors (the numbers: tests/parity/
test_prompt_weighting_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lcm_lite.cli.remake import remake_command
from lcm_lite.errors import UsageError

CALL = {"steps": 2, "seed": 3, "width": 64, "height": 64}


def _pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image in result])


def test_encode_prompts_embeddings_given_back_make_the_same_image(f32_pipe):
    prompts = ["a (red:1.4) cube", "a lighthouse, " * 30]  # over 75 tokens with either vocab
    embeds, negative = f32_pipe.encode_prompt(prompts, prompt_weighting=True, clip_skip=1)
    assert negative is None and embeds.shape[0] == 2 and embeds.shape[1] in (154, 231)
    made = f32_pipe(prompts, prompt_weighting=True, clip_skip=1, **CALL)
    remade = f32_pipe("", prompt_embeds=embeds, **CALL)
    assert np.array_equal(_pixels(made), _pixels(remade))
    metadata = remade.metadata(0, "m")
    assert metadata["prompt_embeds"] == "given" and metadata["prompt"] == ""
    with pytest.raises(UsageError, match="prompt_embeds given in Python"):
        remake_command({key: str(value) for key, value in metadata.items()})
    recorded = made.metadata(1, "m")
    assert (recorded["prompt_weighting"], recorded["clip_skip"]) == (True, 1)
    assert "--prompt-weighting" in remake_command({k: str(v) for k, v in recorded.items()})


def test_weights_change_the_image_and_brackets_are_text_without_weighting(f32_pipe):
    plain = f32_pipe("a (red:1.4) cube", **CALL)
    weighted = f32_pipe("a (red:1.4) cube", prompt_weighting=True, **CALL)
    assert plain.metadata(0, "m")["prompt_weighting"] is False
    assert not np.array_equal(_pixels(plain), _pixels(weighted))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "x", "prompt_embeds": np.zeros((1, 77, 32), np.float32)}, "not both"),
        ({"prompt": "", "prompt_embeds": np.zeros((77, 32), np.float32)}, "float array"),
        ({"prompt": "x", "clip_skip": 3}, "clip_skip must be from 0 to 2"),
        ({"prompt": "x", "clip_skip": True}, "clip_skip must be an integer"),
        ({"prompt": "(x:1.2.3)", "prompt_weighting": True}, "is not a number"),
        ({"prompt": "x", "negative_prompt_embeds": np.zeros((1, 77, 32))}, "no negative"),
    ],
)
def test_bad_prompt_options_are_one_line_errors(f32_pipe, fields, message):
    with pytest.raises(UsageError, match=message) as refused:
        f32_pipe(**fields, **CALL)
    assert "\n" not in str(refused.value)


def test_the_unet_compiles_once_per_text_length(f32_pipe):
    f32_pipe("short", prompt_weighting=True, **CALL)
    unet = f32_pipe._networks.unet()
    f32_pipe("other short", prompt_weighting=True, **CALL)
    assert f32_pipe._networks.unet() is unet
    f32_pipe("long, " * 60, prompt_weighting=True, **CALL)
    assert f32_pipe._networks.shapes.text_length in (154, 231)
    assert f32_pipe._networks.unet() is not unet


@pytest.mark.convert
def test_clip_skip_works_on_a_folder_with_int8_weights_like_the_hubs(
    tiny_diffusers_dir, f32_pipe, tmp_path
):
    """The hub's int8 model's text encoder outputs only last_hidden_state, with NNCF-compressed
    weights: the graph transformation finds the layers there too."""
    from conversion.export import convert
    from lcm_lite import LCMPipeline

    int8 = LCMPipeline.from_pretrained(
        convert(tiny_diffusers_dir, tmp_path / "int8", weights="int8"), precision="f32"
    )
    skipped, _ = int8.encode_prompt("a red cube", clip_skip=1)
    reference, _ = f32_pipe.encode_prompt("a red cube", clip_skip=1)
    unskipped, _ = f32_pipe.encode_prompt("a red cube")
    compression = np.abs(skipped - reference).max()
    assert compression < 0.2  # int8 weights against float32 ones
    assert np.abs(unskipped - reference).max() > 3 * compression


def test_a_text_encoder_graph_of_another_shape_is_refused_in_one_line(f32_pipe):
    import openvino as ov

    from lcm_lite.errors import ModelError
    from lcm_lite.models.clip_skip import output_hidden_state

    model = ov.Core().read_model(f32_pipe.folder.xml("text_encoder"))
    with pytest.raises(ModelError, match="export the model again with lcm-lite-convert") as refused:
        output_hidden_state(model, 1, num_layers=3)  # the IR has 2 layers
    assert "\n" not in str(refused.value)
