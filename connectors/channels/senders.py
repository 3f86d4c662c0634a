"""One sender per provider behind a small Protocol: Twilio (SMS, WhatsApp), Slack, Meta WhatsApp Cloud API.

A sender delivers one `OutboundMessage` and returns the provider's message id. It raises
`PermanentSendError` when the provider refused the message itself (a 4xx other than 429:
a bad number, an unknown channel, a revoked token), so the runner dead-letters it instead
of retrying forever; any other exception (5xx, 429, timeouts, refused connections) is
transient and retried. Every base URL is configurable, so tests reach a local server.

Recipient formats:
- sms: an E.164 number, `+15551234567`.
- whatsapp: an E.164 number; Twilio gets `whatsapp:+15551234567` on both ends, Meta the digits.
- slack: `CHANNEL` or `CHANNEL:THREAD_TS` (e.g. `C0123ABC:1700000000.000100`), so a reply to a
  message in a thread stays in that thread; the channel id never contains a colon.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

import httpx
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client as TwilioClient

from schemas import OutboundMessage

__all__ = [
    "TWILIO_API_BASE_URL",
    "MetaWhatsAppSender",
    "Pacer",
    "PermanentSendError",
    "Sender",
    "SlackSender",
    "TwilioSender",
    "parse_slack_recipient",
]

TWILIO_API_BASE_URL = "https://api.twilio.com"


class PermanentSendError(Exception):
    """The provider refused this message for good: retrying the same request cannot succeed."""


@runtime_checkable
class Sender(Protocol):
    provider: str

    async def send(self, message: OutboundMessage) -> str:
        """Deliver `message`; the provider's message id (several parts: their ids, comma-separated)."""
        ...

    async def aclose(self) -> None: ...


def _permanent(status: int) -> bool:
    # 429 is "slow down", not "never": it is retried with the rest
    return 400 <= status < 500 and status != 429


def _parts(message: OutboundMessage) -> list[str]:
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


class _RebasedHttpClient(TwilioHttpClient):
    """twilio's HTTP client with `https://api.twilio.com` rewritten to a configured base URL.

    twilio-python hardcodes each domain's URL (ApiBase); rewriting at the HTTP client is the
    one place that covers every request without touching the generated classes.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        if url.startswith(TWILIO_API_BASE_URL):
            url = self.base_url + url[len(TWILIO_API_BASE_URL) :]
        return super().request(method, url, *args, **kwargs)


class TwilioSender:
    """SMS and WhatsApp through Twilio's Messages API: one message per part, paced per recipient.

    With `status_callback` (the public URL of `/webhooks/twilio/status`), Twilio reports each
    part's progress there (sent, delivered, undelivered with an error code, ...).

    The twilio client is synchronous (requests), so each call runs in a thread. Parts already
    accepted are remembered per reply while the process lives, so a retry after a transient
    failure on part 3 resumes at part 3 instead of resending parts 1-2.
    """

    provider = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        whatsapp_from: str | None = None,
        base_url: str = TWILIO_API_BASE_URL,
        min_interval_s: float = 1.0,
        timeout_s: float = 15.0,
        status_callback: str | None = None,
    ) -> None:
        self.from_number = from_number
        self.whatsapp_from = whatsapp_from
        self.status_callback = status_callback
        http_client = _RebasedHttpClient(base_url, timeout_s)
        self.client = TwilioClient(account_sid, auth_token, http_client=http_client)
        self.pacer = Pacer(min_interval_s)
        self._accepted: dict[str, list[str]] = {}

    def _ends(self, message: OutboundMessage) -> tuple[str, str]:
        if message.channel == "whatsapp":
            if not self.whatsapp_from:
                raise PermanentSendError("no Twilio WhatsApp sender number configured (twilio_whatsapp_from)")
            return _whatsapp(message.recipient), _whatsapp(self.whatsapp_from)
        if not self.from_number:
            raise PermanentSendError("no Twilio sender number configured (twilio_from_number)")
        return message.recipient, self.from_number

    async def send(self, message: OutboundMessage) -> str:
        to, from_ = self._ends(message)
        extra = {"status_callback": self.status_callback} if self.status_callback else {}
        accepted = self._accepted.setdefault(message.reply_id, [])
        for part in _parts(message)[len(accepted) :]:
            try:
                async with self.pacer.slot(message.recipient):
                    created = await asyncio.to_thread(
                        self.client.messages.create, to=to, from_=from_, body=part, **extra
                    )
            except TwilioRestException as exc:
                if _permanent(exc.status):
                    self._accepted.pop(message.reply_id, None)
                    raise PermanentSendError(f"twilio {exc.status}: {exc.msg} (code {exc.code})") from exc
                raise
            accepted.append(str(created.sid))
        return ",".join(self._accepted.pop(message.reply_id))

    async def aclose(self) -> None:
        session = self.client.http_client.session  # type: ignore[attr-defined]
        if session is not None:
            session.close()


def _whatsapp(number: str) -> str:
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


def parse_slack_recipient(recipient: str) -> tuple[str, str | None]:
    """`C123` → (C123, None); `C123:1700000000.0001` → (C123, 1700000000.0001)."""
    channel, _, thread_ts = recipient.partition(":")
    return channel, thread_ts or None


class _HttpSender:
    """A JSON-over-HTTPS sender with a bearer token; 4xx (not 429) is permanent."""

    provider = "http"

    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s
        )

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(path, json=body)
        if _permanent(response.status_code):
            raise PermanentSendError(f"{self.provider} {response.status_code}: {response.text[:500]}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        await self.http.aclose()


class SlackSender(_HttpSender):
    """Slack's `chat.postMessage`; the whole text in one message (Slack takes up to 40,000 chars)."""

    provider = "slack"

    # Slack answers 200 with ok=false; these errors are worth retrying, every other one is not
    _TRANSIENT = frozenset({"ratelimited", "service_unavailable", "internal_error", "fatal_error", "request_timeout"})

    def __init__(self, token: str, base_url: str = "https://slack.com/api", timeout_s: float = 15.0) -> None:
        super().__init__(base_url, token, timeout_s)

    async def send(self, message: OutboundMessage) -> str:
        channel, thread_ts = parse_slack_recipient(message.recipient)
        body: dict[str, Any] = {"channel": channel, "text": message.text}
        if thread_ts:
            body["thread_ts"] = thread_ts
        data = await self._post("/chat.postMessage", body)
        if not data.get("ok"):
            error = str(data.get("error", "unknown_error"))
            if error in self._TRANSIENT:
                raise RuntimeError(f"slack: {error}")
            raise PermanentSendError(f"slack: {error}")
        return f"{data.get('channel', channel)}:{data['ts']}"


class MetaWhatsAppSender(_HttpSender):
    """Meta's WhatsApp Cloud API: one text message per part (a body holds at most 4096 chars)."""

    provider = "meta"

    def __init__(
        self,
        token: str,
        phone_number_id: str,
        base_url: str = "https://graph.facebook.com/v21.0",
        timeout_s: float = 15.0,
    ) -> None:
        super().__init__(base_url, token, timeout_s)
        self.phone_number_id = phone_number_id
        self._accepted: dict[str, list[str]] = {}

    async def send(self, message: OutboundMessage) -> str:
        to = message.recipient.removeprefix("whatsapp:").lstrip("+")
        accepted = self._accepted.setdefault(message.reply_id, [])
        for part in _parts(message)[len(accepted) :]:
            body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": part}}
            try:
                data = await self._post(f"/{self.phone_number_id}/messages", body)
            except PermanentSendError:
                self._accepted.pop(message.reply_id, None)
                raise
            accepted.append(str(data["messages"][0]["id"]))
        return ",".join(self._accepted.pop(message.reply_id))
