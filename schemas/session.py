"""Per-customer conversation state kept in a Kafka-backed table."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas._base import Record


class HistoryTurn(BaseModel):
    role: Literal["customer", "agent", "human"]
    text: str
    at: datetime
    message_id: str


class SessionContext(Record):
    """Everything the agent remembers about the customer's current session.

    `recent_message_ids` makes a replayed message recognisable, so a worker that restarts
    after a crash neither counts a turn twice nor answers it twice.
    """

    customer_id: str
    conversation_id: str
    session_id: str
    session_number: int = 1
    turn_count: int = 0
    started_at: datetime
    last_activity_at: datetime
    channels: list[str] = Field(default_factory=list)
    last_channel: str | None = None
    last_intent: str | None = None
    slots: dict[str, str] = Field(default_factory=dict)
    sentiment_trend: list[float] = Field(default_factory=list)
    failed_turns: int = 0
    escalated: bool = False
    history: list[HistoryTurn] = Field(default_factory=list)
    recent_message_ids: list[str] = Field(default_factory=list)
    closed: bool = False

    def partition_key(self) -> str:
        return self.customer_id
