"""The channels: inbound provider webhooks (Twilio, Meta WhatsApp Cloud API, Slack, Microsoft Teams), each
verified the provider's way; web chat (`webchat`); email (`email`); the senders of replies (`senders`, `outbox`).

One module per provider holds its signature check and its adapter to `RawInbound`; `routes` mounts
them on the ingress. Message ids derive from the provider's ids, so a provider's retry is the same
message and the stream drops it.
"""

from __future__ import annotations

from connectors.channels import meta, slack, teams, twilio
from connectors.channels._common import REJECTIONS
from connectors.channels.routes import ChannelSecrets, VoiceCalls, webhook_routes

__all__ = ["REJECTIONS", "ChannelSecrets", "VoiceCalls", "meta", "slack", "teams", "twilio", "webhook_routes"]
