"""Untrusted bytes to JSON values: the one strict parser every inbound boundary uses.

The REST API, the providers' JSON webhooks, the web chat socket and the workspace (HTTP and
socket) all read what arrives through `parse_json`, so hostile input is refused the same way
everywhere: a `BodyRefused` with an HTTP status (413 too large, 400 not acceptable JSON, 422 a
refused character) and a sentence naming the fault and where it is.

pydantic's JSON parser (jiter, ours through pydantic) tokenizes first: it refuses invalid UTF-8,
lone UTF-16 surrogate escapes, raw control characters, numbers past 4,300 digits and nesting past
200, each with its line and column, before Python's own limits (integer size, recursion) are ever
reached. What jiter lets through is checked in a second pass by the standard library's decoder,
whose hooks see what jiter does not report: a key given twice (jiter keeps the last one
silently), a float that overflows to infinity (`1e999`), an integer outside 64 bits, NaN and
Infinity (not JSON, though Python writes them). Last, one walk refuses nesting deeper than
`max_depth` and the characters `schemas.text` refuses, in any key or string (U+0000 above all).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pydantic_core
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from schemas.text import refused_character

__all__ = ["BodyRefused", "JsonLimits", "parse_json", "read_body", "receive_frame"]

INT_RANGE = 2**63  # what PostgreSQL's bigint and ClickHouse's Int64 hold


class BodyRefused(ValueError):
    """A body (or frame) refused: the HTTP status to answer with and a sentence for the sender."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class JsonLimits:
    max_bytes: int = 64_000
    max_depth: int = 64  # a Teams activity carrying an adaptive card is the deepest we expect, about 20


_JITER_HINTS = {  # jiter's words, and what they mean to someone who sent the body
    "hex escape": "a \\u escape that is no character (a lone UTF-16 surrogate?)",
    "surrogate": "a \\u escape that is no character (a lone UTF-16 surrogate?)",
    "recursion limit": "nested too deeply",
    "number out of range": "a number too large",
    "invalid unicode": "not valid UTF-8",
}


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, read no further than `max_bytes` (a chunked upload has no length to check first); 413 past it."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > max_bytes):
        raise BodyRefused(413, f"body is {declared} bytes; the limit is {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyRefused(413, f"body exceeds {max_bytes} bytes")
    return bytes(body)


async def receive_frame(websocket: WebSocket) -> str | bytes:
    """The next frame, text or binary (`receive_text` fails on a binary one and takes the socket down)."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    return text if text is not None else bytes(message.get("bytes") or b"")


def parse_json(body: bytes | str, limits: JsonLimits = JsonLimits()) -> Any:
    """The JSON value of `body`, or BodyRefused saying what is wrong with it and where."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if len(data) > limits.max_bytes:
        raise BodyRefused(413, f"body is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRefused(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        pydantic_core.from_json(data, allow_inf_nan=True)  # the next pass names NaN and Infinity
    except ValueError as exc:
        hint = next((h for words, h in _JITER_HINTS.items() if words in str(exc)), None)
        raise BodyRefused(400, f"malformed JSON: {exc}" + (f" ({hint})" if hint else "")) from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_float,
            parse_constant=_constant,
        )
    except _Refused as exc:
        raise BodyRefused(400, f"malformed JSON: {exc}") from None
    _check(value, "", 0, limits.max_depth)
    return value


class _Refused(Exception):
    """Raised by the decoder's hooks; the standard library lets it through unchanged."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _integer(digits: str) -> int:
    number = int(digits)  # jiter has refused anything past Python's 4,300-digit limit
    if not -INT_RANGE <= number < INT_RANGE:
        raise _Refused(f"the integer {digits[:20]}{'...' if len(digits) > 20 else ''} is outside 64 bits")
    return number


def _float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _Refused(f"the number {literal[:20]}{'...' if len(literal) > 20 else ''} is too large for a float")
    return number


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not JSON")


def _check(value: Any, path: str, depth: int, max_depth: int) -> None:
    """Depth and characters, walked once; `path` names the place like pydantic's errors do (`payload.items.0`)."""
    if isinstance(value, str):
        _check_text(value, path)
        return
    if not isinstance(value, dict | list):
        return
    if depth >= max_depth:
        raise BodyRefused(400, f"malformed JSON: nested more than {max_depth} levels deep (at {path[:60]!r})")
    items: Iterable[tuple[str, Any]]
    if isinstance(value, dict):
        for key in value:
            _check_text(key, f"{path}.{key}" if path else key, is_key=True)
        items = value.items()
    else:
        items = ((str(i), v) for i, v in enumerate(value))
    for key, child in items:
        _check(child, f"{path}.{key}" if path else key, depth + 1, max_depth)


def _check_text(text: str, path: str, is_key: bool = False) -> None:
    found = refused_character(text)
    if found is not None:
        what = "the key" if is_key else "the text at"
        raise BodyRefused(
            422, f"{what} {path[-80:]!r} holds {found}, a control character that is not accepted; remove it"
        )
