"""Misspelled copies of training texts: customers type fast, on phones, and the fine-tuned encoder
has only seen Bitext's mostly clean sentences.

The slips are those of a keyboard: two letters swapped, one dropped, one doubled, one replaced by a
neighbouring key. Numbers, emails and order references are never touched, so an entity the NLU
must read stays readable. The copies go to the training split only (`nlu train --typo-copies`).
"""

from __future__ import annotations

import random
import re

__all__ = ["misspell"]

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        near = [_row[i] for i in (_c - 1, _c + 1) if 0 <= i < len(_row)]
        near += [_ROWS[r][_c] for r in (_r - 1, _r + 1) if 0 <= r < len(_ROWS) and _c < len(_ROWS[r])]
        _NEIGHBOURS[_key] = "".join(near)

_WORD = re.compile(r"[A-Za-z]{4,}")


def misspell(text: str, rng: random.Random) -> str:
    """`text` with one slip in one word of four letters or more; unchanged when it has no such word."""
    words = [m for m in _WORD.finditer(text) if not _touches_an_identifier(text, m.start(), m.end())]
    if not words:
        return text
    match = rng.choice(words)
    word = match.group()
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "neighbour"))
    if kind == "swap" and word[i] != word[i + 1]:
        slipped = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind in ("swap", "drop"):  # swapping two equal letters would change nothing: drop one instead
        slipped = word[:i] + word[i + 1 :]
    elif kind == "double":
        slipped = word[:i] + word[i] + word[i:]
    else:
        near = _NEIGHBOURS.get(word[i].lower(), "")
        slipped = word[:i] + rng.choice(near) + word[i + 1 :] if near else word[:i] + word[i + 1 :]
    return text[: match.start()] + slipped + text[match.end() :]


def _touches_an_identifier(text: str, start: int, end: int) -> bool:
    """Part of an email, a URL or a code such as ORD-1234: its whitespace-delimited token holds a
    digit, '@', '/', '_' or '#'."""
    left = text.rfind(" ", 0, start) + 1
    right = text.find(" ", end)
    token = text[left : right if right != -1 else len(text)]
    return any(ch.isdigit() or ch in "@/_#" for ch in token)
