"""format: shape the reply for the customer's channel (length, segments, markup).

The shaping itself is each channel's (`connectors/channels`: SMS segments, WhatsApp and Slack
limits, an email with a subject and an HTML alternative, a voice reply of whole sentences); the
runtime hands it over as the context's `reply_shaper`. `outbound_reply` is the one formatter of
every reply: the agent's (here), a human's and the escalation router's notices.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext, ReplyShaper
from schemas import CustomerProfile, FormattedTurn, GuardedTurn, Message, OutboundMessage, contact_key, utcnow

__all__ = ["Format", "FormatConfig", "agent_reply", "outbound_reply", "reply_id_for", "reply_target"]


def reply_target(message: Message, profile: CustomerProfile | None) -> tuple[str, bool]:
    """Where a reply to `message` goes, and whether that address is verified (the senders deliver only those).

    The address the message came from when its channel vouched for it; otherwise the customer's
    own contact on that channel if the claimed address is one of them, else their first one; else
    the claimed address, unverified: the reply is then shown through the API only, never sent by
    SMS, email or any provider, so a request body cannot aim a reply at someone else's number.
    """
    claimed = message.reply_to or message.sender
    if message.address_verified:
        return claimed, True
    contacts = [c.address for c in (profile.contacts if profile is not None else []) if c.channel == message.channel]
    wanted = contact_key(message.channel, message.sender)
    for address in contacts:
        if contact_key(message.channel, address) == wanted:
            return address, True
    if contacts:
        return contacts[0], True
    return claimed, False


def reply_id_for(message_id: str) -> str:
    """Derived from the inbound id, so a replayed turn yields the same reply id and is sent once."""
    return "r-" + hashlib.sha256(f"reply:{message_id}".encode()).hexdigest()[:24]


def agent_reply(
    shaper: ReplyShaper, message: Message, profile: CustomerProfile | None, text: str, now: datetime
) -> OutboundMessage:
    """The agent's reply to `message`: its id derived from the message's, sent where `reply_target` says."""
    recipient, verified = reply_target(message, profile)
    return outbound_reply(
        shaper,
        reply_id=reply_id_for(message.message_id),
        in_reply_to=message.message_id,
        conversation_id=message.conversation_id,
        customer_id=message.customer_id,
        channel=message.channel,
        recipient=recipient,
        recipient_verified=verified,
        text=text,
        created_at=now,
    )


class FormatConfig(OperatorConfig):
    email_signature: str = Field(default="— The support team")
    whatsapp_limit: int = Field(default=4096, gt=0)
    slack_limit: int = Field(default=3000, gt=0)
    voice_limit: int = Field(default=600, gt=0, description="long speech loses callers; the rest goes by text")


def outbound_reply(
    shaper: ReplyShaper,
    *,
    reply_id: str,
    in_reply_to: str,
    conversation_id: str,
    customer_id: str,
    channel: str,
    recipient: str,
    recipient_verified: bool,
    text: str,
    author: Literal["agent", "human"] = "agent",
    created_at: datetime | None = None,
) -> OutboundMessage:
    """A reply shaped for its channel: the one way any reply is built, whoever wrote it."""
    return OutboundMessage(
        reply_id=reply_id,
        in_reply_to=in_reply_to,
        conversation_id=conversation_id,
        customer_id=customer_id,
        channel=channel,  # type: ignore[arg-type]
        recipient=recipient,
        recipient_verified=recipient_verified,
        author=author,
        created_at=created_at or utcnow(),
        **shaper.shape(channel, text),
    )


class Format(Operator[GuardedTurn, FormattedTurn]):
    """Build the OutboundMessage of the reply, shaped for the channel the customer wrote on."""

    name = "format"
    input_type = GuardedTurn
    output_type = FormattedTurn
    Config: ClassVar[type[OperatorConfig]] = FormatConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._shaper: ReplyShaper | None = None

    def warm_up(self, ctx: OperatorContext) -> None:
        style = self.config.model_dump()
        self._shaper = ctx.require_clients(self.name).reply_shaper(style)

    async def run(self, record: GuardedTurn, ctx: OperatorContext) -> FormattedTurn:
        if self._shaper is None:
            self.warm_up(ctx)
        assert self._shaper is not None
        outbound = agent_reply(self._shaper, record.message, record.profile, record.reply.text, ctx.clock.now())
        return FormattedTurn(**dict(record), outbound=outbound)
