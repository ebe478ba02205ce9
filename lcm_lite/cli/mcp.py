"""``lcm-lite mcp``: lcm-lite's tools for an AI assistant over MCP's stdio transport (the
assistant starts it and talks JSON-RPC on its stdin and stdout; messages go to stderr)."""

from __future__ import annotations

import argparse

from lcm_lite.cli.common import (
    PROG,
    Parser,
    check_queue_size,
    configure_logging,
    model_label,
    model_options,
    open_pipeline,
    queue_size_option,
)


def mcp_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} mcp",
        description="Serve the tools generate_image and edit_image to an AI assistant over MCP "
        '(stdio) (docs: "Integrations").',
    )
    queue_size_option(parser, "are refused")
    model_options(parser)
    return parser


def main(argv: list[str]) -> int:
    """Serve over stdin and stdout until the assistant closes them; return 0."""
    from lcm_lite.server.jobs import JobQueue
    from lcm_lite.server.mcp_tools import create_mcp_server
    from lcm_lite.server.schemas import INTEGER_LIMITS

    args = mcp_parser().parse_args(argv)
    check_queue_size(args.queue_size)
    configure_logging(args.quiet)
    pipe = open_pipeline(args, keep_models=True)
    jobs = JobQueue(
        pipe,
        model_label(args.model),
        capacity=args.queue_size,
        max_side=INTEGER_LIMITS["width"][1],
    )
    try:
        create_mcp_server(jobs, local_files=True).run("stdio")
    finally:
        jobs.close()
    return 0
