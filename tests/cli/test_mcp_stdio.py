"""``lcm-lite mcp``: the MCP SDK's own client spawns ``python -m lcm_lite mcp`` on the tiny
model and calls its tools over stdio, as a desktop assistant does."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcm_lite.images.png import read_png_metadata
from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

mcp = pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


def spawned(tiny_ov_dir: Path, cache: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "lcm_lite", "mcp", "--model", str(tiny_ov_dir), "--precision", "f32"],
        env={
            "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO_ROOT)),
            "LCM_LITE_CACHE": str(cache),
        },
    )


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
def test_an_assistant_generates_edits_saves_and_gets_tool_errors_over_stdio(
    tiny_ov_dir: Path, f32_pipe: LCMPipeline, tmp_path: Path
) -> None:
    picture = io.BytesIO()
    Image.effect_noise((64, 72), 60).convert("RGB").save(picture, format="PNG")
    (tmp_path / "start.png").write_bytes(picture.getvalue())

    async def session() -> dict:
        async with Client(spawned(tiny_ov_dir, tmp_path / "cache")) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            generated = await client.call_tool(
                "generate_image",
                {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "seed": 21},
            )
            edited = await client.call_tool(
                "edit_image",
                {
                    "prompt": "a red cube",
                    "image": str(tmp_path / "start.png"),
                    "strength": 1.0,
                    "steps": 2,
                    "seed": 4,
                },
            )
            saved = await client.call_tool(
                "generate_image",
                {
                    "prompt": "a red cube",
                    "width": 64,
                    "height": 64,
                    "steps": 1,
                    "seed": 5,
                    "num_images": 2,
                    "save_to": str(tmp_path / "cube.png"),
                },
            )
            refused = {
                "steps": await client.call_tool("generate_image", {"prompt": "x", "steps": 9}),
                "picture": await client.call_tool(
                    "edit_image", {"prompt": "x", "image": "not a picture"}
                ),
                "negative": await client.call_tool(
                    "generate_image",
                    {"prompt": "x", "negative_prompt": "blurry", "width": 64, "height": 64},
                ),
            }
            return {
                "tools": tools,
                "generated": generated,
                "edited": edited,
                "saved": saved,
                "refused": refused,
            }

    done = asyncio.run(session())
    tools = done["tools"]
    assert set(tools) == {"generate_image", "edit_image"}
    arguments = tools["generate_image"].input_schema["properties"]
    assert {
        "prompt",
        "width",
        "height",
        "steps",
        "seed",
        "guidance",
        "num_images",
        "negative_prompt",
        "save_to",
    } <= set(arguments)
    assert arguments["steps"]["maximum"] == 8  # the served limits, from Request's declaration
    assert "image" not in arguments and "strength" not in arguments
    assert {"image", "strength"} <= set(tools["edit_image"].input_schema["properties"])

    generated = done["generated"]
    assert not generated.is_error
    image, seed = generated.content
    assert (image.type, image.mime_type, seed.text) == ("image", "image/png", "seed: 21")
    alone = f32_pipe("a red cube", width=64, height=64, steps=2, seed=21)[0]
    assert np.array_equal(pixels(base64.b64decode(image.data)), np.asarray(alone))

    edited_image, edited_seed = done["edited"].content
    assert pixels(base64.b64decode(edited_image.data)).shape == (72, 64, 3)  # the picture's size
    assert edited_seed.text == "seed: 4"

    (said,) = done["saved"].content
    assert said.text == f"saved {tmp_path / 'cube.png'}, {tmp_path / 'cube-1.png'} (seed: 5)"
    assert read_png_metadata(tmp_path / "cube-1.png")["seed"] == "5"

    for name, result in done["refused"].items():
        assert result.is_error, name
        (message,) = result.content
        assert "Traceback" not in message.text
    assert "steps" in done["refused"]["steps"].content[0].text
    assert "base64" in done["refused"]["picture"].content[0].text
    assert "takes no negative prompt" in done["refused"]["negative"].content[0].text


def test_without_the_extra_mcp_says_what_to_install(tmp_path: Path) -> None:
    # mcp made unimportable for the child, as if not installed (sitecustomize runs at start-up)
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['mcp'] = None\n")
    run = subprocess.run(
        [sys.executable, "-m", "lcm_lite", "mcp", "--model", "x"],
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "lcm-lite: error: lcm-lite mcp needs the [mcp] extra (mcp missing): "
        'pip install "lcm-lite[mcp]"'
    ]
