"""Per-customer conversation state kept in a Kafka-backed table."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas._base import Record
from schemas.agent import ActionCall


class HistoryTurn(BaseModel):
    role: Literal["customer", "agent", "human"]
    text: str
    at: datetime
    message_id: str


class TaskState(BaseModel):
    """A playbook task under way: what it has collected and what it waits for.

    It lives in the session, so the customer may answer "Which order?" on another channel, or a
    day later within the session, and the task continues where it stopped. `task_id` is the
    message id that started it; every action's idempotency key derives from it.
    """

    task_id: str
    intent: str
    slots: dict[str, str] = Field(default_factory=dict)
    awaiting: Literal["slot", "verification", "confirmation"] | None = None
    awaiting_slot: str | None = None
    verify_attempts: int = 0
    asked_turns: int = 0
    confirm_reasks: int = Field(default=0, description="unclear answers to the confirmation question so far")
    started_at: datetime
    planner: str = Field(
        default="playbooks-v1",
        description="who made the task: a playbook (`playbooks-v1`), or the LLM planner (`llm-plan-v1`), whose "
        "accepted steps wait here for the identity check and the customer's yes; `plan` runs them, never the model",
    )
    steps: list[ActionCall] = Field(
        default_factory=list, description="llm-plan-v1: the read steps to run once the identity check is answered"
    )
    pending_steps: list[ActionCall] = Field(
        default_factory=list, description="llm-plan-v1: the write steps waiting for the customer's yes"
    )


class SessionContext(Record):
    """Everything the agent remembers about the customer's current session.

    `recent_message_ids` makes a replayed message recognisable, so a worker that restarts
    after a crash neither counts a turn twice nor answers it twice.

    `escalated` holds while a human has the conversation: `route` sends every message to the
    human (reason `with_human`) until the workspace hands it back (a `handback` control message).
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
    task: TaskState | None = None
    verified: bool = False
    identity_locked_until: datetime | None = Field(
        default=None,
        description="the backend refused identity checks until then (too many failures); account actions escalate "
        "as `identity_locked` meanwhile. A copy of the backend's answer, which stays the authority",
    )
    escalated: bool = False
    escalated_at: datetime | None = Field(default=None, description="when the open hand-over to a human began")
    escalation_id: str | None = Field(default=None, description="the open hand-over's first escalation")
    escalation_priority: Literal["low", "normal", "high", "urgent"] | None = None
    history: list[HistoryTurn] = Field(default_factory=list)
    recent_message_ids: list[str] = Field(default_factory=list)
    closed: bool = False

    def partition_key(self) -> str:
        return self.customer_id
