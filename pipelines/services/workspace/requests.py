"""What the workspace page sends: the agents' actions and sign-in, validated; and how a refusal is said."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from starlette.requests import HTTPConnection

from schemas.workspace import Presence

WEB_DIR = Path(__file__).resolve().parents[3] / "web"
COOKIE = "sf_workspace"
DEMO_AGENTS_FILE = "workspace-agents.yaml"
APPROVED_AND_DONE = "A colleague approved your request and it has been carried out."

# What a resolution may be recorded as (Feedback.resolution_code); analytics groups by these.
RESOLUTION_CODES: tuple[str, ...] = (
    "resolved",
    "refund_approved",
    "refund_rejected",
    "order_changed",
    "information_given",
    "escalated_elsewhere",
    "customer_unreachable",
    "duplicate",
    "not_an_issue",
)


ActionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{8,100}$", description="client-generated, idempotency")]
EscalationId = Annotated[str, Field(min_length=1, max_length=100)]


class WorkspaceError(Exception):
    """An action refused: the HTTP status (or the error frame's `status`) and a sentence for the agent."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAction(_Action):
    type: Literal["open"]
    escalation_id: EscalationId


class ReplyAction(_Action):
    type: Literal["reply"]
    escalation_id: EscalationId
    action_id: ActionId
    text: str = Field(min_length=1, max_length=4000)


class ApproveAction(_Action):
    type: Literal["approve"]
    escalation_id: EscalationId
    action_id: ActionId


class RejectAction(_Action):
    type: Literal["reject"]
    escalation_id: EscalationId
    action_id: ActionId
    note: str = Field(default="", max_length=1000, description="what the customer is told; a default if empty")


class TransferAction(_Action):
    type: Literal["transfer"]
    escalation_id: EscalationId
    action_id: ActionId
    to_agent: str | None = Field(default=None, max_length=100)
    to_queue: str | None = Field(default=None, max_length=100)
    warm: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> TransferAction:
        if (self.to_agent is None) == (self.to_queue is None):
            raise ValueError("name exactly one of to_agent and to_queue")
        return self


class ResolveAction(_Action):
    type: Literal["resolve"]
    escalation_id: EscalationId
    action_id: ActionId
    resolution_code: str = Field(max_length=60)
    comment: str = Field(default="", max_length=2000)


class CorrectIntentAction(_Action):
    type: Literal["correct_intent"]
    escalation_id: EscalationId
    action_id: ActionId
    message_id: str = Field(min_length=1, max_length=200)
    corrected_intent: str = Field(max_length=100)


class RateAction(_Action):
    type: Literal["rate"]
    escalation_id: EscalationId
    action_id: ActionId
    message_id: str = Field(min_length=1, max_length=200, description="the AI reply's id")
    rating: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=2000)


class PresenceAction(_Action):
    type: Literal["presence"]
    action_id: ActionId
    presence: Presence


Action = Annotated[
    OpenAction
    | ReplyAction
    | ApproveAction
    | RejectAction
    | TransferAction
    | ResolveAction
    | CorrectIntentAction
    | RateAction
    | PresenceAction,
    Field(discriminator="type"),
]
ACTION = TypeAdapter(Action)
VERBS = {"reply", "approve", "reject", "transfer", "resolve", "correct-intent", "rate"}


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


def token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return conn.cookies.get(COOKIE)


def same_origin(conn: HTTPConnection) -> bool:
    """A browser's request from another site is refused: cookies ride along with those too."""
    origin = conn.headers.get("origin")
    if not origin:
        return True
    host = conn.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host
