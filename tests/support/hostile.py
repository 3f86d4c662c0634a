"""Hostile JSON bodies, as a hostile client would send them, for every boundary's tests.

Each is a message-shaped object with one fault (`wrap` puts the fault where the boundary reads
it), with the status the one strict parser answers and words its error must hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Wrap = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Hostile:
    name: str
    text: bytes  # a JSON string literal or value standing where the customer's text goes
    status: int
    says: str
    raw: bytes | None = None  # a whole body instead, for faults outside any value

    def body(self, wrap: Wrap) -> bytes:
        return self.raw if self.raw is not None else wrap(self.text)


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


HOSTILE: list[Hostile] = [
    # the three that got an HTTP 500
    Hostile("number-of-5000-digits", b"1" * 5000, 400, "number too large"),
    Hostile("lone-surrogate", b'"x\\ud800y"', 400, "surrogate"),
    Hostile("nested-5000-deep", deep(5000), 400, "nested too deeply"),
    # the rest of the class
    Hostile("nested-100-deep", deep(100), 400, "levels deep"),
    Hostile("integer-past-64-bits", b"1" + b"0" * 30, 400, "outside 64 bits"),
    Hostile("float-overflowing-to-infinity", b"1e999", 400, "too large for a float"),
    Hostile("nan", b"NaN", 400, "NaN is not JSON"),
    Hostile("infinity", b"-Infinity", 400, "Infinity is not JSON"),
    Hostile("nul-escaped", b'"a\\u0000b"', 422, "U+0000"),
    Hostile("escape-control", b'"a\\u001b[31mb"', 422, "U+001B"),
    Hostile("raw-control-byte", b'"a\x01b"', 400, "control character"),
    Hostile("invalid-utf8", b'"\xff\xfe"', 400, "not valid UTF-8"),
    Hostile("duplicate-key", b"", 400, "appears twice", raw=b'{"text": "a", "text": "b"}'),
    Hostile("nul-in-a-key", b"", 422, "U+0000", raw=b'{"a\\u0000": "b"}'),
    Hostile("truncated", b"", 400, "malformed JSON", raw=b'{"text": "a'),
    Hostile("empty", b"", 400, "malformed JSON", raw=b""),
]
