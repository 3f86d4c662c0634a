"""The providers' webhooks on the gateway: each verifies the provider's signature first, then admits.

Nothing reaches a topic before the signature holds, and refused requests are not dead-lettered:
unsigned bodies are anyone's input, and keeping them would let a stranger fill the topic. Each
provider's routes live in its channel module (an `InputChannel`); this is where they are
registered and mounted, sharing the one admit path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.routing import BaseRoute

from connectors.channels import meta, slack, teams, twilio
from connectors.channels.admit import Admission
from connectors.channels.base import InputChannel, WebhookContext
from connectors.channels.twilio import VoiceCalls
from connectors.redis.rate_limit import RateLimiter

__all__ = ["ChannelSecrets", "VoiceCalls", "input_channels", "webhook_routes"]

Publish = Callable[[str, str | None, bytes], Awaitable[None]]


@dataclass(frozen=True)
class ChannelSecrets:
    """The providers' secrets (unset: that provider's endpoints answer 503) and the public base URL."""

    twilio_auth_token: SecretStr | None = None
    meta_app_secret: SecretStr | None = None
    meta_verify_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    public_base_url: str | None = None
    teams_app_id: str | None = None  # the audience of the Bot Connector's tokens (not a secret)
    teams_openid_metadata_url: str = teams.OPENID_METADATA_URL


def input_channels(
    secrets: ChannelSecrets,
    voice: VoiceCalls,
    delivery_topic: str | None = "sf.delivery",
    recordings_topic: str | None = "sf.recordings",
) -> list[InputChannel]:
    """The registered input channels with webhooks: a new provider adds its `InputChannel` here."""
    return [
        twilio.TwilioInput(secrets.twilio_auth_token, voice, secrets.public_base_url, delivery_topic, recordings_topic),
        meta.MetaInput(secrets.meta_app_secret, secrets.meta_verify_token),
        slack.SlackInput(secrets.slack_signing_secret),
        teams.TeamsInput(secrets.teams_app_id, secrets.teams_openid_metadata_url),
    ]


def webhook_routes(
    secrets: ChannelSecrets,
    publish: Publish,
    limiter: RateLimiter,
    voice: VoiceCalls,
    ingress_topic: str = "sf.ingress",
    delivery_topic: str | None = "sf.delivery",
    recordings_topic: str | None = "sf.recordings",
    max_body_bytes: int = 64_000,
    clock: Callable[[], float] = time.time,
) -> list[BaseRoute]:
    """Every provider's routes, to mount next to the gateway's own; one admit path for all of them."""
    context = WebhookContext(Admission(publish, limiter, ingress_topic), publish, max_body_bytes, clock)
    channels = input_channels(secrets, voice, delivery_topic, recordings_topic)
    return [route for channel in channels for route in channel.routes(context)]
