"""Meta's WhatsApp Cloud API: the subscription handshake and message webhooks.

Meta signs the raw body with the app secret (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`);
the handshake proves the endpoint is ours by echoing `hub.challenge` when `hub.verify_token`
matches the token typed into Meta's setup.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.channels._common import clip, error, not_configured, refuse
from connectors.channels.base import (
    HttpSender,
    InputChannel,
    PermanentSendError,
    ReplyStyle,
    Shaped,
    WebhookContext,
    message_parts,
    split_segments,
)
from connectors.inbound_body import BodyRefused
from schemas import OutboundMessage, RawInbound

__all__ = [
    "PATH",
    "SIGNATURE_HEADER",
    "MetaInput",
    "MetaWhatsAppSender",
    "handshake_challenge",
    "payload_to_raw",
    "sign",
    "verify_signature",
    "whatsapp_reply",
]

PATH = "/webhooks/meta"
SIGNATURE_HEADER = "X-Hub-Signature-256"


def sign(app_secret: str, body: bytes) -> str:
    """The header value Meta sends for `body`."""
    return "sha256=" + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(app_secret: str, body: bytes, header: str) -> bool:
    """Constant-time comparison, so the answer's timing says nothing about how much of a guess was right."""
    return hmac.compare_digest(sign(app_secret, body).encode("utf-8"), header.strip().encode("utf-8", "replace"))


def handshake_challenge(query: Mapping[str, str], verify_token: str) -> str | None:
    """The challenge to echo when the handshake is a subscription with our token; otherwise None."""
    token = query.get("hub.verify_token", "")
    if query.get("hub.mode") != "subscribe" or not hmac.compare_digest(
        token.encode("utf-8", "replace"), verify_token.encode("utf-8")
    ):
        return None
    return query.get("hub.challenge", "")


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict items of a list: a signed body is still outside input and may have any shape."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(message: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(text, extras) of a message we answer: typed text, or the title of a tapped button or list row."""
    kind = message.get("type")
    if kind == "text" and isinstance(body := (message.get("text") or {}).get("body"), str):
        return body, {}
    if kind == "interactive" and isinstance(interactive := message.get("interactive"), dict):
        reply = interactive.get(str(interactive.get("type")))
        if interactive.get("type") in ("button_reply", "list_reply") and isinstance(reply, dict):
            title = reply.get("title")
            if isinstance(title, str):
                return title, {"reply_type": interactive["type"], "reply_id": str(reply.get("id", ""))[:200]}
    return None


def payload_to_raw(data: Any) -> list[RawInbound]:
    """Every text or interactive-reply message in a webhook; statuses and other types are skipped.

    The message id is derived from Meta's message id (`wamid…`), so a redelivery is the same message.
    """
    if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
        return []
    out: list[RawInbound] = []
    for entry in _dicts(data.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if change.get("field") != "messages" or not isinstance(value, dict):
                continue
            metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            for message in _dicts(value.get("messages")):
                sender, provider_id, found = message.get("from"), message.get("id"), _text(message)
                if not isinstance(sender, str) or not sender or not isinstance(provider_id, str) or not provider_id:
                    continue
                if found is None:
                    continue
                text, extras = found
                out.append(
                    RawInbound(
                        message_id=clip(f"meta-{provider_id}"),
                        channel="whatsapp",
                        sender=clip(sender, 320),
                        address_verified=True,  # the wa_id of a body Meta signed
                        text=text,
                        provider_message_id=clip(provider_id),
                        payload={
                            "provider": "meta",
                            # the number the customer wrote to: replies must go out from it
                            "phone_number_id": str(metadata.get("phone_number_id", ""))[:200],
                            **extras,
                        },
                    )
                )
    return out


# ---- out: WhatsApp replies through the Cloud API --------------------------------------------


def whatsapp_reply(text: str, style: ReplyStyle) -> Shaped:
    """WhatsApp (through Meta or Twilio): parts of at most `whatsapp_limit` characters."""
    return Shaped(text, split_segments(text, style.whatsapp_limit))


class MetaWhatsAppSender(HttpSender):
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
        for part in message_parts(message)[len(accepted) :]:
            body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": part}}
            try:
                data = await self._post(f"/{self.phone_number_id}/messages", body)
            except PermanentSendError:
                self._accepted.pop(message.reply_id, None)
                raise
            accepted.append(str(data["messages"][0]["id"]))
        return ",".join(self._accepted.pop(message.reply_id))


# ---- in: the subscription handshake and message webhooks --------------------------------------


class MetaInput(InputChannel):
    """Meta's webhooks: the GET handshake (our verify token) and signed message notifications."""

    name = "meta"

    def __init__(self, app_secret: SecretStr | None, verify_token: SecretStr | None) -> None:
        self.app_secret = app_secret
        self.verify_token = verify_token

    def routes(self, context: WebhookContext) -> list[BaseRoute]:
        self.context = context
        return [Route(PATH, self.handshake, methods=["GET"]), Route(PATH, self.messages, methods=["POST"])]

    async def handshake(self, request: Request) -> Response:
        if self.verify_token is None:
            return not_configured(request, "meta", "meta_verify_token")
        challenge = handshake_challenge(request.query_params, self.verify_token.get_secret_value())
        if challenge is None:
            return refuse(request, "meta", "bad_verify_token", "hub.mode must be subscribe with our hub.verify_token")
        return PlainTextResponse(challenge)

    async def messages(self, request: Request) -> Response:
        if self.app_secret is None:
            return not_configured(request, "meta", "meta_app_secret")
        body = await self.context.read_body(request)
        if isinstance(body, Response):
            return body
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return refuse(request, "meta", "missing_signature", f"missing {SIGNATURE_HEADER} header")
        if not verify_signature(self.app_secret.get_secret_value(), body, signature):
            return refuse(request, "meta", "bad_signature", f"{SIGNATURE_HEADER} does not match the body")
        try:
            data = self.context.parse(body)
        except BodyRefused as refused:
            return error(refused.status, refused.message)
        # statuses and unknown shapes get 200 too: a non-2xx makes Meta resend them for days
        return await self.context.admit(payload_to_raw(data)) or JSONResponse({"status": "ok"})
