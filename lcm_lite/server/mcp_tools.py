"""lcm-lite as an MCP server (the official ``mcp`` SDK, the ``[mcp]`` extra): the tools
``generate_image`` and ``edit_image`` for AI assistants, over stdio (``lcm-lite mcp``) or the
streamable-HTTP transport at ``/mcp`` of ``lcm-lite serve`` (behind its token).

The tools' arguments are the ``Request`` fields the server takes, derived from their
declaration (``schemas.derived_fields``: the own API's names, the served limits, the help as
each one's description), and ``save_to``. Each returns the PNGs as MCP image content and a
line with the seed; with ``save_to`` it writes the files instead (never over an existing one)
and says where. The jobs run through a ``JobQueue``, as the HTTP APIs' do. Bad arguments and
refused requests are tool errors (``isError``), never a traceback.

Over HTTP the client may be another machine: ``save_to`` and picture paths are refused there
(they would write and read the server's files); over stdio the assistant runs on this machine.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image as McpImage
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from PIL import Image
from pydantic import Field
from starlette.types import Receive, Scope, Send

from lcm_lite import __version__
from lcm_lite.errors import LcmLiteError
from lcm_lite.fields import specs
from lcm_lite.images.png import METADATA_PREFIX, save_png, unique_path
from lcm_lite.request import Request
from lcm_lite.sampling.torch_rng import random_seed
from lcm_lite.server.jobs import JobQueue, QueueFull
from lcm_lite.server.schemas import decode_picture, derived_fields, served_specs

PICTURE_HELP = "base64 PNG, JPEG or WebP (or a data: URL)"
SAVE_TO_HELP = (
    "write the PNG to this file instead of returning it (several images: name-1.png, ...); "
    "never over an existing file; with lcm-lite mcp (stdio) only"
)
NO_FILES = (
    "save_to writes a file on the server's machine: only lcm-lite mcp (stdio) does; over HTTP "
    "the images come back as image content"
)


def tool_fields(with_picture: bool) -> dict[str, str]:
    """The served ``Request`` fields a tool takes (field name -> argument name): the picture's
    own (``image``, ``strength``) only ``with_picture``."""
    return {
        name: field_spec.key
        for name, field_spec in served_specs(Request).items()
        if with_picture or (field_spec.kind != "picture" and not field_spec.needs)
    }


def create_mcp_server(jobs: JobQueue, *, local_files: bool) -> MCPServer:
    """An MCP server whose tools run on ``jobs``; ``local_files``: whether ``save_to`` and
    picture paths are allowed (stdio: the assistant's own machine)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    server = MCPServer(
        "lcm-lite",
        version=__version__,
        instructions="Text to image (generate_image) and image to image (edit_image) with a "
        "latent consistency model: 2 to 8 steps.",
    )
    # the SDK calls logging.basicConfig (a rich handler on the root logger, at INFO) when no
    # handler is there, as in a program that runs Server: the process's logging stays its own
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, with_picture, doc in (
        ("generate_image", False, "Make images from a text prompt; returns PNGs and the seed."),
        (
            "edit_image",
            True,
            "Change a picture as the prompt says (image to image; strength: how much); returns "
            "PNGs and the seed.",
        ),
    ):
        run = _tool(jobs, tool_fields(with_picture), local_files)
        server.add_tool(run, name=name, description=doc, structured_output=False)
    return server


def _tool(jobs: JobQueue, names: dict[str, str], local_files: bool) -> Callable[..., Any]:
    """A tool function whose signature is the derived fields (and ``save_to``)."""
    derived = derived_fields(Request, names)
    declared = specs(Request)
    pictures = [name for name in names if declared[name].kind == "picture"]
    given_as = PICTURE_HELP + (" or a file path" if local_files else "")
    for name in pictures:  # the starting picture is required; a mask, a control image are not
        help_text = f"{declared[name].help}: {given_as}"
        derived[names[name]] = (
            (str, Field(description=help_text))
            if name == "image"
            else (str | None, Field(None, description=help_text))
        )
    parameters = []
    for argument, (annotation, field) in derived.items():
        default = inspect.Parameter.empty if field.is_required() else field.default
        parameters.append(
            inspect.Parameter(
                argument,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[annotation, Field(description=field.description)],
            )
        )
    parameters.append(
        inspect.Parameter(
            "save_to",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[str | None, Field(description=SAVE_TO_HELP)],
        )
    )

    async def run(**arguments: Any) -> list[McpImage | str]:
        save_to = arguments.pop("save_to")
        if save_to is not None and not local_files:
            raise ToolError(NO_FILES)
        values = {name: arguments[argument] for name, argument in names.items()}
        try:
            for name in pictures:
                if values[name] is not None:
                    values[name] = _picture(values[name], local_files)
            if values.get("seed") is None:
                values["seed"] = random_seed()
            request = Request(**values)
            request.check()
            job = jobs.submit(request)
        except (LcmLiteError, QueueFull, ValueError) as error:
            raise ToolError(str(error)) from None
        await asyncio.wrap_future(job.outcome)  # the worker's: a failure is kept, not raised
        if job.error is not None:
            raise ToolError(str(job.error))
        seed = f"seed: {job.request.seed}"
        if save_to is not None:
            saved = [_save(png, Path(save_to).expanduser()) for png in job.images]
            return [f"saved {', '.join(map(str, saved))} ({seed})"]
        return [*(McpImage(data=png, format="png") for png in job.images), seed]

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return run


def _picture(given: str, local_files: bool) -> bytes:
    """The picture's bytes: base64 or a data: URL; with ``local_files``, a file path too."""
    if local_files and not given.startswith("data:") and Path(given).expanduser().is_file():
        return Path(given).expanduser().read_bytes()
    return decode_picture(given)


def _save(png: bytes, path: Path) -> Path:
    """``png`` written atomically at ``path`` (or the next free name), with its metadata."""
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        metadata = {
            key.removeprefix(METADATA_PREFIX): value
            for key, value in image.text.items()
            if key.startswith(METADATA_PREFIX)
        }
        target = unique_path(path)
        save_png(image, target, metadata)
    return target


class McpEndpoint:
    """The streamable-HTTP transport of ``server`` as an ASGI app for one route (``/mcp``):
    stateless, JSON answers; the Host and Origin checks are the app's own (``security``,
    ``origin``). Its session manager starts with the first request, in the server's event loop
    (``lcm-lite serve`` runs uvicorn without lifespan events), and stops with the loop."""

    def __init__(self, server: MCPServer) -> None:
        server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self._manager: StreamableHTTPSessionManager = server.session_manager
        self._started: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            self._runner = asyncio.ensure_future(self._run(self._started))
        await asyncio.shield(self._started)
        await self._manager.handle_request(scope, receive, send)

    async def _run(self, started: asyncio.Future[None]) -> None:
        async with self._manager.run():
            started.set_result(None)
            await asyncio.Event().wait()  # until the loop ends
