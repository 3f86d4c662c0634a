"""Slack's Events API: direct and channel messages to the app.

Slack signs `v0:{X-Slack-Request-Timestamp}:{raw body}` with the app's signing secret
(`X-Slack-Signature: v0=<hex HMAC-SHA256>`); a timestamp more than five minutes off is refused,
so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.channels._common import clip, error, not_configured, refuse
from connectors.channels.base import (
    HttpSender,
    InputChannel,
    PermanentSendError,
    ReplyStyle,
    Shaped,
    WebhookContext,
    split_segments,
)
from connectors.inbound_body import BodyRefused
from schemas import OutboundMessage, RawInbound

__all__ = [
    "MAX_AGE_S",
    "PATH",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SlackInput",
    "SlackSender",
    "check_signature",
    "parse_slack_recipient",
    "payload_to_raw",
    "sign",
    "slack_reply",
]

PATH = "/webhooks/slack/events"
SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
MAX_AGE_S = 300


def sign(signing_secret: str, timestamp: str, body: bytes) -> str:
    """The header value Slack sends for `body` at `timestamp`."""
    basestring = b"v0:" + timestamp.encode("utf-8") + b":" + body
    return "v0=" + hmac.new(signing_secret.encode("utf-8"), basestring, hashlib.sha256).hexdigest()


def check_signature(signing_secret: str, body: bytes, timestamp: str, signature: str, now: float) -> str | None:
    """None when the request is Slack's and fresh; otherwise the refusal reason.

    The age is checked before the signature and in both directions: a clock a little ahead must
    not open a window for replays either.
    """
    if not timestamp.isascii() or not timestamp.isdigit() or abs(now - int(timestamp)) > MAX_AGE_S:
        return "stale_timestamp"
    expected = sign(signing_secret, timestamp, body).encode("utf-8")
    if not hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace")):
        return "bad_signature"
    return None


def payload_to_raw(data: Any) -> RawInbound | None:
    """A customer's message event as a RawInbound; None for anything else.

    Bot messages and subtypes (edits, deletions, joins, our own replies) are skipped, or the agent
    would answer itself. The id comes from `event_id`, the same on each of Slack's retries.
    """
    if not isinstance(data, dict) or data.get("type") != "event_callback":
        return None
    event, event_id = data.get("event"), data.get("event_id")
    if not isinstance(event, dict) or not isinstance(event_id, str) or not event_id:
        return None
    if event.get("type") != "message" or event.get("subtype") or event.get("bot_id"):
        return None
    user, text, channel, ts = event.get("user"), event.get("text"), event.get("channel"), event.get("ts")
    if not all(isinstance(v, str) and v for v in (user, channel, ts)) or not isinstance(text, str):
        return None
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else ts
    return RawInbound(
        message_id=clip(f"slack-{event_id}"),
        channel="slack",
        sender=clip(user, 320),  # type: ignore[arg-type]
        address_verified=True,  # the user of an event Slack signed
        text=text,
        provider_message_id=clip(event_id),
        reply_to=f"{channel}:{thread_ts}",  # the sender's format for a reply in that thread
        payload={
            "provider": "slack",
            "team_id": str(data.get("team_id", ""))[:200],
            "channel_id": channel,
            "ts": ts,
            # replies go in the thread the customer wrote in, or start one under their message
            "thread_ts": thread_ts,
        },
    )


# ---- out: replies through chat.postMessage --------------------------------------------------


def slack_reply(text: str, style: ReplyStyle) -> Shaped:
    """Slack: markdown, in parts of at most `slack_limit` characters."""
    return Shaped(text, split_segments(text, style.slack_limit), "markdown")


def parse_slack_recipient(recipient: str) -> tuple[str, str | None]:
    """`C123` → (C123, None); `C123:1700000000.0001` → (C123, 1700000000.0001)."""
    channel, _, thread_ts = recipient.partition(":")
    return channel, thread_ts or None


class SlackSender(HttpSender):
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


# ---- in: the Events API -----------------------------------------------------------------------


class SlackInput(InputChannel):
    """Slack's Events API, each request signed with the app's signing secret and recent."""

    name = "slack"

    def __init__(self, signing_secret: SecretStr | None) -> None:
        self.signing_secret = signing_secret

    def routes(self, context: WebhookContext) -> list[BaseRoute]:
        self.context = context
        return [Route(PATH, self.events, methods=["POST"])]

    async def events(self, request: Request) -> Response:
        if self.signing_secret is None:
            return not_configured(request, "slack", "slack_signing_secret")
        body = await self.context.read_body(request)
        if isinstance(body, Response):
            return body
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return refuse(
                request, "slack", "missing_signature", f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header"
            )
        secret = self.signing_secret.get_secret_value()
        reason = check_signature(secret, body, timestamp, signature, self.context.clock())
        if reason == "stale_timestamp":
            return refuse(request, "slack", reason, f"{TIMESTAMP_HEADER} is more than {MAX_AGE_S}s from now")
        if reason is not None:
            return refuse(request, "slack", "bad_signature", f"{SIGNATURE_HEADER} does not match the body")
        try:
            data = self.context.parse(body)
        except BodyRefused as refused:
            return error(refused.status, refused.message)
        if isinstance(data, dict) and data.get("type") == "url_verification":
            return JSONResponse({"challenge": str(data.get("challenge", ""))})
        raw = payload_to_raw(data)
        return await self.context.admit([raw] if raw else []) or JSONResponse({"status": "ok"})
