"""A1111's attention syntax, parsed as diffusers' community long-prompt-weighting pipeline
(``examples/community/lpw_stable_diffusion.py``, ``parse_prompt_attention``) parses it:

* ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1; they nest;
* ``(text:1.4)`` multiplies it by 1.4 (any ``[+-]?[.0-9]+``: zero and negative weights too);
* ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\`` are the characters themselves; a lone ``\\`` is
  dropped;
* a bracket never closed weighs the rest of the prompt as if closed at its end; a closing bracket
  never opened is text, as is ``:1.4)`` outside round brackets and ``(text:abc)``'s ``:abc``;
* neighbouring pieces of equal weight are joined.

A weight that matches the pattern but is not a number (``(text:1.2.3)``) is an error, where the
reference raises ``ValueError``.
"""

from __future__ import annotations

import re

from lcm_lite.errors import UsageError

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One lexical item each: an escape, a lone backslash, an opening bracket, ":WEIGHT)", a closing
# bracket, a run of plain text, or a colon (tried in this order, as the reference's alternation).
_ITEM = re.compile(
    r"(?P<escape>\\[()\[\]\\])"
    r"|(?P<backslash>\\)"
    r"|(?P<open>[(\[])"
    r"|:(?P<weight>[+-]?[.\d]+)\)"
    r"|(?P<close>[)\]])"
    r"|(?P<text>[^\\()\[\]:]+|:)"
)


def parse_attention(prompt: str) -> list[tuple[str, float]]:
    """``prompt`` as (text, weight) pieces, in order; ``[("", 1.0)]`` for an empty prompt."""
    pieces: list[list] = []  # [text, weight], weights multiplied in place as brackets close
    open_round: list[int] = []  # index of the first piece each open bracket weighs
    open_square: list[int] = []

    def weigh_from(start: int, multiplier: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= multiplier

    for item in _ITEM.finditer(prompt):
        kind, matched = item.lastgroup, item.group(0)
        if kind == "escape":
            pieces.append([matched[1], 1.0])
        elif kind == "backslash":
            pieces.append(["", 1.0])
        elif kind == "open":
            (open_round if matched == "(" else open_square).append(len(pieces))
        elif kind == "weight" and open_round:
            weigh_from(open_round.pop(), _weight(item.group("weight"), prompt))
        elif matched == ")" and open_round:
            weigh_from(open_round.pop(), ROUND_MULTIPLIER)
        elif matched == "]" and open_square:
            weigh_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            pieces.append([matched, 1.0])
    for start in open_round:
        weigh_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        weigh_from(start, SQUARE_MULTIPLIER)
    joined: list[tuple[str, float]] = []
    for text, weight in pieces or [["", 1.0]]:
        if joined and joined[-1][1] == weight:
            joined[-1] = (joined[-1][0] + text, weight)
        else:
            joined.append((text, weight))
    return joined


def _weight(text: str, prompt: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"prompt weight {text!r} is not a number in {prompt!r:.60}") from None
