"""``lcm-lite serve``'s command line: options, the server's life, and its signals."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

from lcm_lite.cli.common import (
    PROG,
    Parser,
    check_queue_size,
    configure_logging,
    integer,
    model_label,
    model_options,
    open_pipeline,
    queue_size_option,
)
from lcm_lite.errors import UsageError
from lcm_lite.server.jobs import JobQueue
from lcm_lite.server.running import Server
from lcm_lite.server.security import check_bind


class _StopOnSignal:
    """SIGINT/SIGTERM handler: the first asks the server to stop once the running job is done,
    a second cancels that job. Only sets flags: safe whatever the main thread was doing."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            self.jobs.cancel_running()
        self.requested = True


def serve_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} serve",
        description='Serve the demo page at / and a JSON API (docs: "Serve").',
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs --token)",
    )
    parser.add_argument(
        "--port",
        type=integer,
        default=8000,
        help="TCP port (default 8000; 0 picks a free one)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LCM_LITE_TOKEN"),
        help="bearer token every API client must send (default: $LCM_LITE_TOKEN)",
    )
    queue_size_option(parser, "get 503")
    model_options(parser)
    return parser


def main(argv: list[str]) -> int:
    """Serve until SIGINT or SIGTERM, then finish the job in flight and return 0."""
    args = serve_parser().parse_args(argv)
    check_bind(args.host, args.token)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {args.port}")
    check_queue_size(args.queue_size)
    configure_logging(args.quiet)
    pipe = open_pipeline(args, keep_models=True)
    server = Server(
        pipe,
        host=args.host,
        port=args.port,
        token=args.token,
        capacity=args.queue_size,
        model=model_label(args.model),
    )
    stop = _StopOnSignal(server.jobs)
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            print(
                f"{PROG}: serving {server.model} on {server.url} (Ctrl+C stops)",
                file=sys.stderr,
                flush=True,
            )
            while not stop.requested:
                time.sleep(0.1)
            print(
                f"{PROG}: stopping after the job in flight (Ctrl+C again cancels it)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
