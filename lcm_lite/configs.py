"""The model folder's JSON files (``config.json``, ``scheduler_config.json``, tokenizer files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ModelError


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a ``ModelError`` naming the file if it is missing, unreadable
    or not an object."""
    if not path.is_file():
        raise ModelError(f"model folder is incomplete: {path} is missing")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read {path}: {error}") from None
    if not isinstance(content, dict):
        raise ModelError(f"cannot read {path}: expected a JSON object")
    return content
