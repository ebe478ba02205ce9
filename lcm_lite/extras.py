"""Optional extras (``pyproject.toml``): a feature whose packages are not installed says, in one
line, which extra brings them, instead of failing on an import."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from lcm_lite.errors import UsageError


def require_extra(extra: str, modules: Sequence[str], feature: str) -> None:
    """Raise a one-line UsageError naming ``pip install "lcm-lite[extra]"`` when any of
    ``modules`` (import names) cannot be imported."""
    missing = [name for name in modules if not _importable(name)]
    if missing:
        raise UsageError(
            f"{feature} needs the [{extra}] extra ({', '.join(missing)} missing): "
            f'pip install "lcm-lite[{extra}]"'
        )


def installed(modules: Sequence[str]) -> bool:
    """Whether every one of ``modules`` (import names) can be imported: an extra is there."""
    return all(_importable(name) for name in modules)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
