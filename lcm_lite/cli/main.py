"""``lcm-lite`` / ``python -m lcm_lite``: generate (the default), info, bench, quantize, serve,
mcp.

Heavy modules (numpy, openvino) are imported inside the commands, so ``--help`` is instant.
Every failure is one line on stderr and an exit code (docs: "Exit codes").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from lcm_lite.cli.common import EXIT_TERMINATED, PROG, Terminated, raise_on_sigterm
from lcm_lite.errors import Cancelled, LcmLiteError

COMMANDS = ("generate", "info", "bench", "quantize", "serve", "mcp")
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 1
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "generate"
    raise_on_sigterm()
    try:
        code = _command(command)(argv)
        sys.stdout.flush()  # here, where a reader that went away is caught, not at exit
        return code
    except LcmLiteError as error:
        if isinstance(error, Cancelled):
            print(f"{PROG}: interrupted", file=sys.stderr)
        else:
            print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # `lcm-lite info x.png | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return EXIT_BROKEN_PIPE
    except Exception as error:  # a bug: still one line, with the way to see the traceback
        if os.environ.get("LCM_LITE_DEBUG"):
            raise
        print(
            f"{PROG}: internal error: {type(error).__name__}: {error} "
            "(set LCM_LITE_DEBUG=1 to see the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _command(name: str) -> Callable[[list[str]], int]:
    """The command ``name``, imported now: each loads only what it needs."""
    if name == "generate":
        from lcm_lite.cli.generate import generate

        return generate
    if name == "info":
        from lcm_lite.cli.info import info

        return info
    if name == "bench":
        from lcm_lite.cli.bench import main as bench

        return bench
    if name == "quantize":
        from lcm_lite.cli.quantize import main as quantize

        return quantize
    from lcm_lite.extras import require_extra
    from lcm_lite.server import EXTRA_MODULES, MCP_EXTRA_MODULES

    if name == "mcp":
        require_extra("mcp", MCP_EXTRA_MODULES, "lcm-lite mcp")
        from lcm_lite.cli.mcp import main as mcp

        return mcp
    require_extra("serve", EXTRA_MODULES, "lcm-lite serve")
    from lcm_lite.cli.serve import main as serve

    return serve
