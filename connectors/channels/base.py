"""The channel contract: what every channel module provides, stated once (after Rasa's `channel.py`).

A channel is a unit: one module per provider (`twilio`, `meta`, `slack`, `teams`, `email`,
`webchat`) holds both directions, registered in `connectors/channels/__init__.py`.

- **In**: an `InputChannel` mounts the provider's webhooks. Each route verifies the provider's
  signature or token before anything else, turns the request into `RawInbound` records and
  hands them to the one admit path (`admit.Admission`: rate limit, then `sf.ingress`).
- **Out**: an `OutputChannel` delivers an `OutboundMessage` and returns the provider's message
  id; it raises `PermanentSendError` when the provider refused the message for good (dead
  letter) and anything else for a transient failure (retried). Replies are shaped for their
  channel by the channel's `ReplyShape` before they are sent: rich replies fall back to text,
  so every channel can deliver every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from connectors.channels.admit import Admission, too_many
from connectors.inbound_body import BodyRefused, JsonLimits, parse_json, read_body
from schemas import OutboundMessage, RawInbound

__all__ = [
    "HttpSender",
    "InputChannel",
    "OutputChannel",
    "Pacer",
    "PermanentSendError",
    "ReplyShape",
    "ReplyStyle",
    "Sender",
    "Shaped",
    "WebhookContext",
    "markdown_reply",
    "message_parts",
    "permanent_status",
]


# ---- in -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookContext:
    """What every provider's webhooks share: the admit path, the raw publisher, body limits, the clock."""

    admission: Admission
    publish: Callable[[str, str | None, bytes], Awaitable[None]]
    max_body_bytes: int = 64_000
    clock: Callable[[], float] = field(default=time.time)

    async def read_body(self, request: Request) -> bytes | Response:
        """The raw body (signatures are over the exact bytes), or 413 past the limit."""
        try:
            return await read_body(request, self.max_body_bytes)
        except BodyRefused as refused:
            return JSONResponse({"error": refused.message}, refused.status)

    def parse(self, body: bytes) -> Any:
        """A signed JSON body's value (the one strict parser); BodyRefused says what is wrong with it."""
        return parse_json(body, JsonLimits(self.max_body_bytes))

    async def admit(self, records: Sequence[RawInbound]) -> Response | None:
        """Publish what the limits allow (the one admit path); 429 if any was held back, for the provider to resend."""
        refused = await self.admission.admit_all(records)
        return None if refused is None else too_many(refused[0].channel, refused[1])


class InputChannel(ABC):
    """A provider's inbound side: its webhook routes, each verifying the caller before doing any work."""

    name: ClassVar[str]

    @abstractmethod
    def routes(self, context: WebhookContext) -> list[BaseRoute]:
        """The routes to mount on the gateway."""


# ---- out ------------------------------------------------------------------------------------


class PermanentSendError(Exception):
    """The provider refused this message for good: retrying the same request cannot succeed."""


@runtime_checkable
class Sender(Protocol):
    """Anything that delivers replies: an `OutputChannel`, or the outbox standing in for one."""

    provider: str

    async def send(self, message: OutboundMessage) -> str:
        """Deliver `message`; the provider's message id (several parts: their ids, comma-separated)."""
        ...

    async def aclose(self) -> None: ...


class OutputChannel(ABC):
    """A provider's outbound side: delivers replies of its `channels`; every base URL is configurable."""

    provider: ClassVar[str]

    @abstractmethod
    async def send(self, message: OutboundMessage) -> str:
        """Deliver `message`; the provider's message id (several parts: their ids, comma-separated)."""

    async def aclose(self) -> None:  # noqa: B027 - optional: most senders hold no connection
        """Release connections; the default has none."""


def permanent_status(status: int) -> bool:
    # 429 is "slow down", not "never": it is retried with the rest
    return 400 <= status < 500 and status != 429


def message_parts(message: OutboundMessage) -> list[str]:
    return message.parts or [message.text]


class Pacer:
    """At most one send per `min_interval_s` per recipient, so a reply's segments arrive in order.

    Carriers do not guarantee the order of SMS sent in the same instant; spacing them keeps a
    long reply readable. Recipients are paced independently.
    """

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self._last: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def slot(self, recipient: str) -> AsyncIterator[None]:
        """Hold the recipient's turn for one send; the interval counts from when that send finished,
        so the provider sees the gap even when the first request was slow to connect."""
        lock = self._locks.setdefault(recipient, asyncio.Lock())
        async with lock:
            last = self._last.get(recipient)
            if last is not None:
                pause = last + self.min_interval_s - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            try:
                yield
            finally:
                self._last[recipient] = time.monotonic()
        if len(self._last) > 10_000:  # forget recipients idle for longer than the interval
            cutoff = time.monotonic() - self.min_interval_s
            for key in [k for k, at in self._last.items() if at < cutoff]:
                self._last.pop(key, None)
                self._locks.pop(key, None)


class HttpSender(OutputChannel):
    """A JSON-over-HTTPS sender with a bearer token; 4xx (not 429) is permanent."""

    provider = "http"

    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s
        )

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(path, json=body)
        if permanent_status(response.status_code):
            raise PermanentSendError(f"{self.provider} {response.status_code}: {response.text[:500]}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        await self.http.aclose()


# ---- reply shapes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyStyle:
    """The tenant's settings of reply shaping (the `format` operator's config)."""

    email_signature: str = "— The support team"
    whatsapp_limit: int = 4096
    slack_limit: int = 3000
    voice_limit: int = 600


@dataclass(frozen=True)
class Shaped:
    """The fields of an `OutboundMessage` that depend on its channel."""

    text: str
    parts: list[str]
    content_format: Literal["text", "markdown", "html"] = "text"
    subject: str | None = None
    html: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"text": self.text, "parts": self.parts, "content_format": self.content_format,
                "subject": self.subject, "html": self.html}  # fmt: skip


ReplyShape = Callable[[str, ReplyStyle], Shaped]
"""A channel's shaping of a reply's text: segments, limits, markup."""


def markdown_reply(text: str, style: ReplyStyle) -> Shaped:
    """The default shape: the whole text as one markdown part (web chat, the apps, the REST API, Teams)."""
    return Shaped(text, [text], "markdown")


def split_segments(text: str, limit: int) -> list[str]:
    """Split on word boundaries into parts of at most `limit` characters."""
    if len(text) <= limit:
        return [text]
    return textwrap.wrap(text, width=limit, break_long_words=True, break_on_hyphens=False)
