"""The one way a model folder's JSON configs are read: a frozen dataclass from a JSON object.

Each field takes the key of its name, checked against the JSON type its annotation says: ``bool``
true or false, ``int`` an integer, ``float`` any number, ``str`` a string, ``tuple[int, ...]`` /
``tuple[float, ...]`` a list of them (read as a tuple), ``X | None`` null too. Keys the dataclass
does not declare are ignored; a missing key leaves the field's default (diffusers' default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from types import NoneType, UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from lcm_lite.errors import ModelError

T = TypeVar("T")
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {int: "integers", float: "numbers"}


def from_json(cls: type[T], content: Mapping[str, object]) -> T:
    """``cls`` with the values of ``content`` its fields name; a one-line ModelError naming the
    first key whose value has the wrong JSON type (and whatever ``cls`` itself refuses)."""
    hints = get_type_hints(cls)
    return cls(
        **{
            field.name: _value(field.name, content[field.name], hints[field.name])
            for field in fields(cls)  # type: ignore[arg-type]
            if field.name in content
        }
    )


def _value(name: str, value: object, hint: Any) -> object:
    optional = get_origin(hint) in (Union, UnionType)  # X | None
    kind = next(k for k in get_args(hint) if k is not NoneType) if optional else hint
    if optional and value is None:
        return None
    item = get_args(kind)[0] if get_origin(kind) is tuple else None
    if item is None and _fits(value, kind):
        return kind(value)
    if item is not None and isinstance(value, list) and all(_fits(v, item) for v in value):
        return tuple(item(v) for v in value)
    expected = _EXPECTED[kind] if item is None else f"a list of {_PLURALS[item]}"
    raise ModelError(f"{name} must be {'null or ' * optional}{expected}, got {value!r:.60}")


def _fits(value: object, kind: type) -> bool:
    """``value`` is JSON of ``kind``: an integer is a number too, true is no integer."""
    return type(value) in ((int, float) if kind is float else (kind,))
