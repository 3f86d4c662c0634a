"""What arrives: the channel-native record the ingress publishes and the normalized Message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from schemas._base import Record

Channel = Literal["webchat", "mobile", "email", "sms", "whatsapp", "voice", "slack", "teams", "api"]
CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]
# RawInbound.payload keys that normalize keeps on the Message (and the store in messages.channel_meta)
CHANNEL_META_KEYS: tuple[str, ...] = ("call_sid", "recording_url", "recording_sid", "confidence")


def utcnow() -> datetime:
    return datetime.now(UTC)


class RawInbound(Record):
    """A message as a channel adapter received it, before any AI work (topic `sf.ingress`).

    Keyed by channel address so one sender's messages stay in order before identity is known.
    """

    message_id: str = Field(min_length=1, max_length=200)
    channel: Channel
    sender: str = Field(min_length=1, max_length=320, description="channel address: email, phone, session id")
    text: str
    customer_id: str | None = Field(
        default=None, max_length=200, description="set when the channel authenticated the customer"
    )
    provider_message_id: str | None = Field(default=None, max_length=200)
    address_verified: bool = Field(
        default=False,
        description="the channel vouches for `sender` (a signed webhook, the SMTP listener's checks, the web chat "
        "socket, an API key with customers:act); replies by SMS, email, ... go only to a verified address",
    )
    reply_to: str | None = Field(
        default=None,
        max_length=1000,
        description="where the answer goes when not to `sender`: a Slack thread, a Teams activity",
    )
    received_at: datetime = Field(default_factory=utcnow)
    payload: dict[str, Any] = Field(default_factory=dict, description="channel-native extras, kept for audit")

    def partition_key(self) -> str:
        return f"{self.channel}:{self.sender}"


class Message(Record):
    """The unified message every later operator sees, keyed by customer (topic `sf.messages`)."""

    message_id: str
    conversation_id: str
    customer_id: str
    channel: Channel
    sender: str
    text: str
    content_type: Literal["text", "empty"] = "text"
    provider_message_id: str | None = None
    channel_meta: dict[str, str] = Field(
        default_factory=dict,
        description="the channel's extras worth keeping with the message (CHANNEL_META_KEYS of the raw payload): "
        "a call turn's call_sid, recording_url, confidence",
    )
    reply_to: str | None = Field(default=None, description="the reply address when not `sender` (see RawInbound)")
    address_verified: bool = Field(default=False, description="the channel vouched for `sender` (see RawInbound)")
    received_at: datetime
    normalized_at: datetime = Field(default_factory=utcnow)
    control: Literal["handback"] | None = Field(
        default=None,
        description="not a customer message: `handback` = the workspace resolved it, the AI takes over again",
    )

    def partition_key(self) -> str:
        return self.customer_id
