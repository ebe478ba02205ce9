"""The command line: ``lcm-lite [generate] | info | bench | serve`` (``main`` dispatches).

Heavy modules (numpy, openvino) are imported inside the commands, so ``--help`` is instant.
"""

from lcm_lite.cli.main import main

__all__ = ["main"]
