"""Each call's LoRA blend (``Request.lora_weights``: one weight per adapter loaded, in load order;
by default the weights given at load), and how the networks take it (``LoadOptions.lora_mode``):

- ``fixed``: the weights are compiled into the networks as constants, today's path; another blend
  is another compile (cached per blend).
- ``runtime``: the networks take the weights as an input (``models.lora_branches``): any blend,
  no compile. The weights are what diffusers' ``set_adapters(names, adapter_weights)`` sets.
- ``auto`` (the default): fixed while every call asks for the load blend, runtime from the first
  call that asks for another (one compile, then none).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import replace

from lcm_lite.errors import UsageError
from lcm_lite.models.lora import Adapter
from lcm_lite.models.lora_branches import Branches
from lcm_lite.request import LORA_MODES


class LoraBlend:
    """The adapters loaded with a pipeline and the mode their weights are compiled in."""

    def __init__(self, adapters: Sequence[Adapter], mode: str = "auto") -> None:
        if mode not in LORA_MODES:
            raise UsageError(f"lora_mode must be {', '.join(LORA_MODES)}, got {mode!r}")
        self.adapters = tuple(adapters)
        self.mode = mode
        self._runtime = mode == "runtime"  # auto: becomes True at the first other blend

    @property
    def loaded_weights(self) -> tuple[float, ...]:
        return tuple(adapter.weight for adapter in self.adapters)

    def weights(self, asked: Sequence[float] | float | None) -> tuple[float, ...] | None:
        """The blend of a call that asks for ``asked`` (None: the load weights); None without
        adapters. A UsageError (one line) when the count is not the number of adapters."""
        if asked is None:
            return self.loaded_weights or None
        values = [asked] if isinstance(asked, numbers.Real) else list(asked)
        if not self.adapters:
            raise UsageError("lora_weights needs LoRA adapters loaded (--lora); none are")
        if len(values) != len(self.adapters):
            names = ", ".join(adapter.source for adapter in self.adapters)
            raise UsageError(
                f"lora_weights needs {len(self.adapters)} weight(s), one per LoRA loaded "
                f"({names}), got {len(values)}"
            )
        if not all(math.isfinite(value) for value in values):
            raise UsageError(f"lora_weights must be finite numbers, got {values}")
        return tuple(float(value) for value in values)

    def branches(self, weights: tuple[float, ...] | None) -> Branches:
        """How the networks compile for a call with the blend ``weights``: the weights as an
        input (``runtime`` mode, or ``auto`` once a blend other than the load one was asked), or
        compiled in."""
        if weights is not None and weights != self.loaded_weights and self.mode == "auto":
            self._runtime = True
        if self._runtime or weights is None:
            return Branches(self.adapters, runtime=self._runtime)
        return Branches(
            tuple(replace(a, weight=w) for a, w in zip(self.adapters, weights, strict=True))
        )
