"""The request is declared once (``lcm_lite.request``): the command line's options, the server's
request and job models, the PNG metadata and the remake command are derived from it, so a field
added there appears in all of them, and every field round-trips metadata -> request -> command
line."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from lcm_lite.cli.common import Parser, add_options, given
from lcm_lite.cli.generate import generate_parser
from lcm_lite.cli.remake import remake_argv
from lcm_lite.errors import UsageError
from lcm_lite.fields import Range, Spec, metadata_of, spec, specs
from lcm_lite.request import LoadOptions, Request, from_metadata


@dataclass(frozen=True)
class WithDummy(Request):
    """``Request`` with one more field, as a contributor would add one."""

    dummy: int = spec(
        Spec(
            "a dummy field of this test",
            "integer",
            key="dummy_field",
            limits=Range(0, 9),
            served=Range(0, 5),
        ),
        3,
    )


def test_a_new_field_appears_in_the_command_line_help_and_parses_and_is_checked():
    parser = Parser(prog="lcm-lite")
    add_options(parser, WithDummy)

    assert "--dummy-field DUMMY" in parser.format_help()
    assert "a dummy field of this test (default: 3)" in " ".join(parser.format_help().split())
    args = parser.parse_args(["--dummy-field", "7", "--steps", "2"])
    assert WithDummy("x", **given(args, WithDummy)).dummy == 7
    assert WithDummy("x", **given(parser.parse_args([]), WithDummy)).dummy == 3
    too_large = WithDummy("x", **given(parser.parse_args(["--dummy-field", "12"]), WithDummy))
    with pytest.raises(UsageError, match="dummy must be from 0 to 9, got 12"):
        too_large.check()


def test_a_new_field_appears_in_the_servers_request_and_job_schemas_with_its_served_limits():
    schemas = pytest.importorskip("lcm_lite.server.schemas")

    body_model = schemas.own_api_model(WithDummy)
    dummy = body_model.model_json_schema()["properties"]["dummy_field"]
    assert dummy["default"] == 3 and dummy["maximum"] == 5 and dummy["minimum"] == 0
    assert dummy["description"] == "a dummy field of this test"
    body = body_model.model_validate({"prompt": "a fox", "dummy_field": 4, "seed": 1})
    assert body.to_request(WithDummy) == WithDummy("a fox", dummy=4, seed=1)
    with pytest.raises(ValueError, match="dummy_field"):
        body_model.model_validate({"prompt": "a fox", "dummy_field": 6})
    assert "dummy_field" in schemas.job_view_model(WithDummy).model_json_schema()["properties"]


def test_a_new_field_is_recorded_in_the_metadata_and_in_the_remake_command():
    metadata = metadata_of(WithDummy("a fox", dummy=4, seed=5), 0)

    assert metadata["dummy_field"] == 4
    text = {key: str(value) for key, value in metadata.items()}
    assert from_metadata(text, WithDummy)[0].dummy == 4
    assert "--dummy-field=4" in remake_argv(text, declared=WithDummy)


@dataclass(frozen=True)
class WithFlagAndNumbers(Request):
    """``Request`` with a switch and a list of numbers, the two kinds no field of it uses yet."""

    switch: bool = spec(Spec("a dummy switch", "flag", key="dummy_switch"), False)
    weights: tuple[float, ...] | None = spec(
        Spec("dummy weights", "numbers", key="dummy_weights", limits=Range(0.0, 2.0))
    )


def test_a_switch_and_a_list_of_numbers_are_options_schemas_metadata_and_remake_words():
    parser = Parser(prog="lcm-lite")
    add_options(parser, WithFlagAndNumbers)
    args = parser.parse_args(["--dummy-switch", "--dummy-weights", "0.7,1.5"])
    request = WithFlagAndNumbers("a fox", **given(args, WithFlagAndNumbers))
    assert (request.switch, request.weights) == (True, [0.7, 1.5])
    unset = parser.parse_args([])
    assert WithFlagAndNumbers("x", **given(unset, WithFlagAndNumbers)).switch is False
    off = parser.parse_args(["--no-dummy-switch"])
    assert WithFlagAndNumbers("x", **given(off, WithFlagAndNumbers)).switch is False

    text = {key: str(value) for key, value in metadata_of(request, 0).items()}
    assert (text["dummy_switch"], text["dummy_weights"]) == ("True", "0.7,1.5")
    assert from_metadata(text, WithFlagAndNumbers)[0] == request
    argv = remake_argv(text, declared=WithFlagAndNumbers)
    assert "--dummy-switch" in argv and "--dummy-weights=0.7,1.5" in argv
    off_text = {**text, "dummy_switch": "False"}
    assert not any("switch" in word for word in remake_argv(off_text, declared=WithFlagAndNumbers))

    WithFlagAndNumbers("x", weights=0.5).check()  # one number is a list of one
    for bad, message in (
        ({"switch": 1}, "switch must be True or False, got 1"),
        ({"weights": [0.5, 3.0]}, r"weights must be a number in \[0, 2\] or a list of them"),
        ({"weights": []}, "weights must be"),
        ({"weights": [math.nan]}, "weights must be"),
        ({"weights": [True]}, "weights must be"),
    ):
        with pytest.raises(UsageError, match=message):
            WithFlagAndNumbers("x", **bad).check()
    with pytest.raises(UsageError, match="expected numbers separated by commas"):
        from_metadata({**text, "dummy_weights": "0.5,x"}, WithFlagAndNumbers)


def test_a_switch_and_a_list_of_numbers_are_typed_in_the_servers_schemas():
    schemas = pytest.importorskip("lcm_lite.server.schemas")

    body_model = schemas.own_api_model(WithFlagAndNumbers)
    properties = body_model.model_json_schema()["properties"]
    assert properties["dummy_switch"]["type"] == "boolean"
    body = body_model.model_validate(
        {"prompt": "a fox", "dummy_switch": True, "dummy_weights": [0.5, 1.0], "seed": 1}
    )
    assert body.to_request(WithFlagAndNumbers) == WithFlagAndNumbers(
        "a fox", switch=True, weights=[0.5, 1.0], seed=1
    )
    for bad in ({"dummy_switch": "yes"}, {"dummy_weights": [2.5]}, {"dummy_weights": []}):
        with pytest.raises(ValueError, match="dummy_"):
            body_model.model_validate({"prompt": "a fox", **bad})
    view = schemas.job_view_model(WithFlagAndNumbers).model_json_schema()["properties"]
    assert {"dummy_switch", "dummy_weights"} <= set(view)


EVERY_FIELD = Request(
    "a red fox",
    negative_prompt="blurry",
    image=Path("cat.png"),
    mask_image=Path("mask.png"),
    mask_blur=3,
    padding_mask_crop=16,
    outpaint=[8, 0, 16, 0],
    strength=0.5,
    steps=3,
    guidance_scale=7.5,
    width=64,
    height=72,
    num_images=2,
    seed=2**64 - 1,
    original_inference_steps=40,
    timesteps=[999, 499, 99],
    vae="tiny",
    lora_weights=[0.5, 0.0],
    prompt_weighting=True,
    clip_skip=1,
    control_image=[Path("edges.png"), Path("depth.png")],
    control_preprocess="canny",
    canny_thresholds=[50.0, 150.0],
    controlnet_conditioning_scale=[0.5, 1.25],
    control_guidance_start=0.25,
    control_guidance_end=0.75,
    guess_mode=True,
)
EVERY_LOAD_OPTION = LoadOptions(
    model="someone/model",
    tiny_vae="taesd",
    loras=[("a.safetensors", 0.5), ("b/c", 1.0)],
    controlnet=[("cn/canny", 0.5), ("cn-depth", 1.25)],
)


def _command_line_fields() -> list[str]:
    return [
        name
        for declared in (Request, LoadOptions)
        for name, field_spec in specs(declared).items()
        if field_spec.key is not None and field_spec.flag is not None
    ]


def test_every_field_round_trips_from_metadata_to_the_command_line_and_back():
    # PNG text chunks hold text: what the metadata wrote comes back as strings
    written = {**metadata_of(EVERY_FIELD, 0), **metadata_of(EVERY_LOAD_OPTION, 0)}
    read_back = {key: str(value) for key, value in written.items()}

    argv = remake_argv(read_back)
    args = generate_parser().parse_args(argv[2:])

    assert Request(args.prompt, **given(args, Request)) == from_metadata(read_back)[0]
    remade = LoadOptions(**given(args, LoadOptions))
    assert (remade.model, remade.tiny_vae, remade.loras, remade.controlnet) == (
        EVERY_LOAD_OPTION.model,
        EVERY_LOAD_OPTION.tiny_vae,
        EVERY_LOAD_OPTION.loras,
        EVERY_LOAD_OPTION.controlnet,
    )
    request = from_metadata(read_back)[0]
    for name in (item.name for item in fields(Request)):
        if name in ("latents", "prompt_embeds", "negative_prompt_embeds"):  # Python only
            continue
        expected = getattr(EVERY_FIELD, name)
        if name in ("image", "mask_image"):
            expected = Path(expected.name)
        if name == "timesteps":
            expected = list(expected)
        assert getattr(request, name) == expected, name
    assert sorted(set(_command_line_fields())) == sorted(
        name for name in _command_line_fields() if getattr(args, name) is not None
    )


def test_fields_that_need_another_are_neither_recorded_nor_checked_without_it():
    assert "strength" not in metadata_of(Request("x", strength=0.3), 0)
    Request("x", strength=5.0).check()  # ignored without a picture, as diffusers
    with pytest.raises(UsageError, match=r"strength must be a number in \(0, 1\], got 5.0"):
        Request("x", image=Path("p.png"), strength=5.0).check()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 100}, "width must be a multiple of 8, got 100"),
        ({"width": 4096}, "width must be from 8 to 2048, got 4096"),
        ({"steps": 0}, "steps must be from 1 to the schedule length, got 0"),
        ({"num_images": 2.0}, "num_images must be an integer, got 2.0"),
        ({"num_images": True}, "num_images must be an integer, got True"),
        ({"guidance_scale": math.nan}, "guidance_scale must be a finite number >= 0"),
        ({"guidance_scale": -1}, "guidance_scale must be a finite number >= 0"),
        ({"seed": -1}, "seed must be an integer from 0 to 2\\*\\*64-1, got -1"),
        ({"vae": "medium"}, 'vae must be "full" or "tiny", got \'medium\''),
        ({"prompt": ["a", 3]}, "prompts must be strings, got int"),
        ({"prompt": "a\x00b"}, "a prompt contains a NUL character"),
        ({"negative_prompt": "\ud800"}, "a prompt is not valid UTF-8 text"),
        ({"prompt": []}, "give at least one prompt"),
        ({"num_images": None}, "num_images must be an integer, got None"),
        ({"guidance_scale": None}, "guidance_scale must be a finite number >= 0, got None"),
        ({"vae": None}, 'vae must be "full" or "tiny", got None'),
    ],
)
def test_bad_values_are_refused_in_one_sentence(changes, message):
    request = Request(changes.pop("prompt", "a fox"), **changes)
    with pytest.raises(UsageError, match=message):
        request.check()


def test_command_line_options_are_derived_with_their_defaults_and_choices():
    help_text = " ".join(generate_parser().format_help().split())
    for option in ("--steps", "--guidance", "--num-images", "--timesteps", "--vae {full,tiny}"):
        assert option in help_text
    assert "LCM steps (default: 4)" in help_text
    assert "--lora FILE|HUB_ID[:WEIGHT]" in help_text
    assert "--device DEVICE" in help_text and "(default: CPU)" in help_text
    with pytest.raises(UsageError, match="expected an integer, got 'four'"):
        generate_parser().parse_args(["x", "--steps", "four"])


def test_the_keyword_call_takes_exactly_the_requests_fields():
    from lcm_lite import LCMPipeline

    parameters = inspect.signature(LCMPipeline.__call__).parameters
    request_fields = [item.name for item in fields(Request)]
    assert [name for name in parameters if name in request_fields] == request_fields
    assert list(parameters)[-2:] == ["callback", "progress"]


def test_the_remake_command_parses_values_that_start_with_a_dash_and_skips_what_needs_a_picture():
    metadata = {"prompt": "-a fox", "negative_prompt": "-blurry", "strength": "0.3", "seed": "1"}

    argv = remake_argv(metadata)
    args = generate_parser().parse_args(argv[2:])

    assert (args.prompt, args.negative_prompt, args.seed) == ("-a fox", "-blurry", 1)
    assert args.strength is None  # recorded without its picture (edited by hand): left out


def test_a_metadata_value_that_does_not_parse_is_one_usage_error_naming_it():
    with pytest.raises(UsageError, match="the metadata's seed is not valid: expected an integer"):
        remake_argv({"prompt": "x", "seed": "abc"})


def test_the_model_is_recorded_whether_it_is_a_hub_id_or_a_path():
    assert metadata_of(LoadOptions(model=Path("/models/lcm")), 0) == {"model": "/models/lcm"}
    assert metadata_of(LoadOptions(model="a/b"), 0) == {"model": "a/b"}
