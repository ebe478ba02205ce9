"""``lcm-lite serve``'s HTTP side: the demo page and HTTP APIs (lcm-lite's own and OpenAI's
images API) on FastAPI and uvicorn, the ``[serve]`` extra. The command line is ``cli.serve``.

    schemas   what requests carry and answers hold (pydantic, derived from ``lcm_lite.request``)
    security  listen address, token, Host check, body limits, security headers
    jobs      the job queue: one worker thread owns the pipeline
    app       the routes, between HTTP and the job queue
    mcp_tools the MCP tools (the [mcp] extra), for lcm-lite mcp and /mcp
    running   Server: the app on uvicorn in a thread
"""

EXTRA_MODULES = ("fastapi", "uvicorn", "multipart")
MCP_EXTRA_MODULES = ("mcp",)  # the [mcp] extra: lcm-lite mcp, and /mcp on serve
