"""What providers report after the fact: delivery statuses of our messages, recordings of calls."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas._base import Record
from schemas.inbound import utcnow

MessageStatus = Literal[
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "canceled",
    "read",
    "partially_delivered",
    "receiving",
    "received",
]

# How far along a message is: a status never replaces one of a higher rank, so a late `sent`
# does not undo `delivered`. The outcomes (delivered, undelivered, failed, canceled) share a rank:
# the first one stored stays. `read` (WhatsApp) comes after delivery.
STATUS_RANK: dict[str, int] = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "receiving": 2,
    "sent": 3,
    "received": 3,
    "partially_delivered": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,
}

RecordingStatus = Literal["in-progress", "completed", "absent", "failed"]
RECORDING_RANK: dict[str, int] = {"in-progress": 0, "completed": 1, "absent": 1, "failed": 1}


class DeliveryStatus(Record):
    """A provider's status callback for one message we sent (topic `sf.delivery`), keyed by its id.

    Twilio sends one per status change, in no guaranteed order; the store keeps the furthest.
    """

    message_sid: str = Field(min_length=1, max_length=64)
    provider: Literal["twilio"] = "twilio"
    status: MessageStatus
    error_code: int | None = Field(default=None, description="the provider's error code (failed, undelivered)")
    recipient: str | None = Field(default=None, max_length=320)
    received_at: datetime = Field(default_factory=utcnow)

    @property
    def rank(self) -> int:
        return STATUS_RANK[self.status]

    def partition_key(self) -> str:
        return self.message_sid


class CallRecording(Record):
    """A call's recording as the provider announced it (topic `sf.recordings`), keyed by call.

    The call's turns carry the same `call_sid` in `Message.channel_meta`, which ties the
    recording to the conversation.
    """

    recording_sid: str = Field(min_length=1, max_length=64)
    call_sid: str = Field(min_length=1, max_length=64)
    provider: Literal["twilio"] = "twilio"
    recording_url: str = Field(min_length=1, max_length=2000)
    status: RecordingStatus = "completed"
    duration_s: int | None = Field(default=None, ge=0)
    received_at: datetime = Field(default_factory=utcnow)

    @property
    def rank(self) -> int:
        return RECORDING_RANK[self.status]

    def partition_key(self) -> str:
        return self.call_sid
