"""Customer profiles: who the customer is across channels (topic `sf.profiles`, keyed by customer).

Profile changes flow through the topic: the Postgres sink stores them, and every stream worker
keeps the whole topic as a read-only table, so `enrich_context` never queries a database on
the hot path. The topic is compacted: the latest profile per customer is the truth.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas._base import Record
from schemas.inbound import Channel, utcnow


def contact_key(channel: str, address: str) -> str:
    """How a channel address is looked up: the ingress's `channel:sender`, emails case-folded."""
    address = address.strip()
    if channel == "email":
        address = address.lower()
    return f"{channel}:{address}"


class ContactAddress(BaseModel):
    """An address a customer writes from: an email, a phone number, a chat or Slack user id."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    address: str = Field(min_length=1, max_length=320)


class LifetimeSummary(BaseModel):
    """What the business knows of the customer's history, kept current by the profile owner."""

    model_config = ConfigDict(extra="forbid")

    conversations: int = Field(default=0, ge=0)
    orders: int = Field(default=0, ge=0)
    total_spent: float = Field(default=0.0, ge=0)
    currency: str = "USD"
    last_contact_at: datetime | None = None
    notes: str = ""


class CustomerProfile(Record):
    customer_id: str = Field(min_length=1, max_length=200)
    display_name: str = ""
    contacts: list[ContactAddress] = Field(default_factory=list)
    preferences: dict[str, str] = Field(default_factory=dict, description="e.g. preferred_channel, tone")
    vip_tier: Literal["standard", "silver", "gold", "platinum"] = "standard"
    language: str = Field(default="en", min_length=2, max_length=16)
    lifetime: LifetimeSummary = Field(default_factory=LifetimeSummary)
    updated_at: datetime = Field(default_factory=utcnow)

    def partition_key(self) -> str:
        return self.customer_id

    def index_keys(self) -> list[str]:
        """The contact addresses this customer is found under (identity across channels)."""
        return [contact_key(c.channel, c.address) for c in self.contacts]
