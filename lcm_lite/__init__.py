"""lcm-lite: text-to-image with a latent consistency model on OpenVINO, torch-free at inference.

    from lcm_lite import LCMPipeline
    pipe = LCMPipeline.from_pretrained("path/to/model")
    result = pipe("a beautiful pink unicorn, 8k", seed=1234567)
    result[0].save("unicorn.png")

``pipe(prompt, **fields)`` is ``pipe.generate(Request(prompt, **fields))``: ``Request`` declares
every field once. Importing the package loads nothing heavy and touches no network:
``LCMPipeline`` is imported on first use. The layers, bottom up: ``sampling`` and ``images``
(NumPy), ``request``, ``runtime`` (OpenVINO), ``models``, ``pipeline``, then ``server`` and
``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lcm_lite import moved
from lcm_lite.errors import (
    Cancelled,
    DeviceError,
    LcmLiteError,
    ModelError,
    OutputError,
    UsageError,
)
from lcm_lite.request import Request

if TYPE_CHECKING:
    from lcm_lite.pipeline.lcm_pipeline import LCMPipeline
    from lcm_lite.pipeline.results import GenerationResult, StepInfo

__version__ = "0.1.0"
moved.install()
__all__ = [
    "LCMPipeline",
    "Request",
    "GenerationResult",
    "StepInfo",
    "LcmLiteError",
    "UsageError",
    "ModelError",
    "DeviceError",
    "OutputError",
    "Cancelled",
    "__version__",
]


def __getattr__(name: str) -> object:
    if name == "LCMPipeline":
        from lcm_lite.pipeline.lcm_pipeline import LCMPipeline

        return LCMPipeline
    if name in ("GenerationResult", "StepInfo"):
        from lcm_lite.pipeline import results

        return getattr(results, name)
    raise AttributeError(f"module 'lcm_lite' has no attribute {name!r}")
