"""MCP's streamable HTTP at ``/mcp`` of a live ``lcm-lite serve`` on the tiny model, called by
the MCP SDK's own client, behind the server's token."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
from lcm_lite.server.running import Server

mcp = pytest.importorskip("mcp")
import httpx2  # noqa: E402 - the MCP SDK's HTTP client
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

TOKEN = "an-mcp-bearer-token-of-length"


@pytest.fixture(scope="module")
def server(f32_pipe: LCMPipeline) -> Iterator[Server]:
    with Server(f32_pipe, port=0, token=TOKEN, capacity=2, model="tiny") as server:
        yield server


def connected(server: Server, token: str = TOKEN) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return Client(streamable_http_client(f"{server.url}mcp", http_client=http))


def test_an_assistant_generates_and_edits_over_http_behind_the_token(
    server: Server, f32_pipe: LCMPipeline
) -> None:
    picture = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(picture, format="PNG")

    async def session() -> tuple:
        async with connected(server) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            generated = await client.call_tool(
                "generate_image",
                {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 1, "seed": 8},
            )
            edited = await client.call_tool(
                "edit_image",
                {
                    "prompt": "a lighthouse",
                    "image": base64.b64encode(picture.getvalue()).decode(),
                    "strength": 0.5,
                    "steps": 2,
                },
            )
            a_path = await client.call_tool("edit_image", {"prompt": "x", "image": "/etc/hostname"})
            saving = await client.call_tool(
                "generate_image", {"prompt": "x", "save_to": "/tmp/x.png"}
            )
            return tools, generated, edited, a_path, saving

    tools, generated, edited, a_path, saving = asyncio.run(session())
    assert set(tools) == {"generate_image", "edit_image"}
    # over HTTP the client is elsewhere: no save_to, and pictures come as base64 only
    image, seed = generated.content
    assert seed.text == "seed: 8"
    alone = f32_pipe("a lighthouse", width=64, height=64, steps=1, seed=8)[0]
    with Image.open(io.BytesIO(base64.b64decode(image.data))) as served:
        assert np.array_equal(np.asarray(served.convert("RGB")), np.asarray(alone))
    assert not edited.is_error and edited.content[0].type == "image"
    assert a_path.is_error and "base64" in a_path.content[0].text
    assert saving.is_error
    assert "save_to writes a file on the server's machine" in saving.content[0].text


def test_a_wrong_token_is_refused_before_mcp_sees_the_request(server: Server) -> None:
    statuses = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async def session() -> None:
        http = httpx2.AsyncClient(
            headers={"Authorization": "Bearer not-the-token-at-all"},
            event_hooks={"response": [record]},
        )
        async with Client(streamable_http_client(f"{server.url}mcp", http_client=http)) as client:
            await client.list_tools()

    with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the refusal in task groups
        asyncio.run(session())
    assert statuses and set(statuses) == {401}
