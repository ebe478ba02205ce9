"""AUTOMATIC1111's ``<lora:NAME:WEIGHT>`` tags: taken out of the prompt, read as the weights of
the adapters loaded."""

from __future__ import annotations

import pytest

from lcm_lite.errors import UsageError
from lcm_lite.prompting.lora_tags import LoraTag, lora_name, tagged_weights, take_lora_tags


def test_tags_are_taken_out_of_the_prompt_with_their_weights_default_one():
    prompt, tags = take_lora_tags("a cat <lora:style:0.8>, <lora:detail> (red:1.2)<lora:x:0.5:0.5>")
    assert prompt == "a cat ,  (red:1.2)"
    assert tags == [LoraTag("style", 0.8), LoraTag("detail", 1.0), LoraTag("x", 0.5)]
    assert take_lora_tags("no tags, <hypernet:h:1>") == ("no tags, <hypernet:h:1>", [])


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<lora:style:strong>", "the weight is not a number"),
        ("<lora:style:nan>", "not a finite number"),
        ("<lora:style:0.8:0.3>", "give one weight"),
    ],
)
def test_a_tag_whose_weight_lcm_lite_cannot_apply_is_one_usage_error(prompt, message):
    with pytest.raises(UsageError, match=message):
        take_lora_tags(prompt)


def test_tags_set_the_weights_of_the_adapters_they_name_and_others_keep_their_load_weight():
    loaded = [("/loras/lcm-lora.safetensors", 1.0), ("someone/style-lora", 0.7)]
    assert [lora_name(source) for source, _ in loaded] == ["lcm-lora", "style-lora"]
    weights, unknown = tagged_weights([LoraTag("style-lora", 0.2), LoraTag("nope", 1)], loaded)
    assert (weights, unknown) == ([1.0, 0.2], ["nope"])
    assert tagged_weights([LoraTag("nope", 1)], loaded) == (None, ["nope"])
    assert tagged_weights([], loaded) == (None, [])
