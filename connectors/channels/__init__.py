"""The channels, one module per provider holding both directions (`base.py` states the contract).

- `twilio`: SMS, WhatsApp and voice calls in (signed webhooks), SMS/WhatsApp out, voice answered in the call.
- `meta`: WhatsApp Cloud API in and out. `slack`: Events API in, chat.postMessage out.
- `teams`: Bot Framework activities in (JWT-verified), Bot Connector replies out.
- `email`: an SMTP listener in, an SMTP relay out. `webchat`: the WebSocket protocol of the widget and apps.
- `http_api`: the REST gateway (`POST /v1/messages`), `admit`: the one admit path every inbound route uses,
  `outbox`: where replies of unconfigured providers go, `routes`: the webhooks mounted on the gateway.

Adding a channel is one module (its `InputChannel`, its `OutputChannel`, its reply shape) plus its
registration here: `INPUT_CHANNELS` and `REPLY_SHAPES`, and the channel's name in `schemas.Channel`.
Message ids derive from the provider's ids, so a provider's retry is the same message and the
stream drops it.
"""

from __future__ import annotations

from typing import Any

from connectors.channels import email, meta, slack, teams, twilio
from connectors.channels._common import REJECTIONS
from connectors.channels.base import ReplyShape, ReplyStyle, markdown_reply
from connectors.channels.routes import ChannelSecrets, VoiceCalls, webhook_routes

__all__ = [
    "REJECTIONS",
    "REPLY_SHAPES",
    "ChannelSecrets",
    "ChannelShaper",
    "VoiceCalls",
    "meta",
    "slack",
    "teams",
    "twilio",
    "webhook_routes",
]

REPLY_SHAPES: dict[str, ReplyShape] = {
    "sms": twilio.sms_reply,
    "voice": twilio.voice_reply,
    "whatsapp": meta.whatsapp_reply,
    "slack": slack.slack_reply,
    "email": email.email_reply,
}
"""How each channel shapes a reply; channels not listed (web chat, the apps, the REST API, Teams) take markdown."""


class ChannelShaper:
    """Shapes a reply's text for its channel: the one formatter of agent, human and router replies alike."""

    def __init__(self, style: ReplyStyle | None = None) -> None:
        self.style = style or ReplyStyle()

    def shape(self, channel: str, text: str) -> dict[str, Any]:
        """The `OutboundMessage` fields that depend on the channel: text, parts, content_format, subject, html."""
        return REPLY_SHAPES.get(channel, markdown_reply)(text.strip(), self.style).fields()
