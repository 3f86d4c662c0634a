"""The agent workspace's records: agents, the escalation queue and the commands that change it.

The router's state lives on the compacted topic `sf.workspace.state` as `WorkspaceState` rows
(key `entry:<escalation_id>` or `agent:<agent_id>`), so a restarted router rebuilds it by
reading the topic from the beginning. Every change an agent or the workspace asks for is a
`RouterCommand` on `sf.workspace.commands`: one ordered log, applied once per `command_id`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas._base import Record
from schemas.inbound import Channel, Message, utcnow
from schemas.outbound import Escalation, OutboundMessage

Presence = Literal["online", "away", "offline"]
EntryStatus = Literal["waiting", "assigned", "resolved"]
CommandKind = Literal["presence", "resolve", "transfer", "human_replied", "decided"]
CustomerChoice = Literal["wait", "callback", "email"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

__all__ = [
    "EPOCH",
    "AgentSpec",
    "AgentState",
    "CommandKind",
    "CustomerChoice",
    "EntryStatus",
    "Presence",
    "QueueEntry",
    "RouterCommand",
    "WorkspaceState",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentSpec(_Model):
    """A human agent as configured (the agents YAML file): what they can take and how much.

    `skills` name intents (`get_refund`) or categories (`refund`, from the intent->category map
    in pipelines/handover/data/categories.yaml); `"*"` takes any. `languages` are primary
    language tags (`en`, `de`; `en-GB` counts as `en`); `"*"` speaks any. `capacity` is how many
    conversations they hold at once. `queues` are the queues whose waiting entries they see and
    are given (`"*"`: all). `password_hash` is the workspace login (format: pipelines/handover/auth.py).
    """

    agent_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")
    display_name: str = ""
    role: Literal["agent", "supervisor"] = "agent"
    skills: list[str] = Field(default_factory=lambda: ["*"])
    languages: list[str] = Field(default_factory=lambda: ["en"])
    capacity: int = Field(default=3, ge=1, le=100)
    queues: list[str] = Field(default_factory=lambda: ["general"])
    password_hash: str

    @property
    def name(self) -> str:
        """What the customer is told the agent is called."""
        return self.display_name or self.agent_id


class QueueEntry(_Model):
    """One escalated conversation in the workspace: waiting, with an agent, or resolved.

    `escalation` is the first hand-over with its full context; later customer messages of the
    same conversation while it is open arrive as `follow_ups`. `priority_score` is the score at
    the last published change (the router recomputes it as the entry waits). `notices` are the
    kinds of customer notices recorded (each is sent once, under an id derived from the kind),
    `outbox` those of them (and a handback) not yet confirmed sent, `applied_commands` the ids
    of the commands applied to this entry (a replayed command changes nothing).
    """

    escalation_id: str
    conversation_id: str
    customer_id: str
    channel: Channel
    recipient: str
    queue: str = "general"
    skill: str
    language: str = "en"
    vip_tier: str = "standard"
    severity: str = "normal"
    priority_score: float = 0.0
    status: EntryStatus = "waiting"
    agent_id: str | None = None
    escalation: Escalation
    follow_ups: list[Escalation] = Field(default_factory=list)
    enqueued_at: datetime
    waiting_since: datetime | None = Field(default=None, description="when it last (re)entered the queue")
    assigned_at: datetime | None = None
    resolved_at: datetime | None = None
    resolution_code: str | None = None
    first_human_reply_at: datetime | None = None
    transfers: list[dict[str, Any]] = Field(
        default_factory=list, description="each {from, to, to_queue, warm, at, reason}: hand-overs between agents"
    )
    assignments: int = Field(default=0, ge=0, description="how many times an agent was given this entry")
    customer_choice: CustomerChoice | None = None
    notices: list[str] = Field(default_factory=list)
    outbox: list[OutboundMessage | Message] = Field(
        default_factory=list, description="notices and the handback recorded but not yet known to be sent"
    )
    applied_commands: list[str] = Field(default_factory=list)
    decision: dict[str, Any] | None = Field(
        default=None, description="what a human decided about the prepared actions (see RouterCommand)"
    )

    def key(self) -> str:
        return f"entry:{self.escalation_id}"


class AgentState(_Model):
    """An agent's presence and the escalations they hold (derived from the entries on restore)."""

    agent_id: str
    presence: Presence = "offline"
    assigned: list[str] = Field(default_factory=list, description="escalation ids, in the order given")
    since: datetime = Field(default=EPOCH, description="when the presence last changed")
    applied_commands: list[str] = Field(default_factory=list, description="the latest presence command ids applied")

    def key(self) -> str:
        return f"agent:{self.agent_id}"


class WorkspaceState(Record):
    """One row of the router's table (compacted topic `sf.workspace.state`): an entry or an agent."""

    key: str
    entry: QueueEntry | None = None
    agent: AgentState | None = None

    @model_validator(mode="after")
    def _one_of(self) -> WorkspaceState:
        if (self.entry is None) == (self.agent is None):
            raise ValueError("a workspace row holds exactly one of entry or agent")
        return self

    def partition_key(self) -> str:
        return self.key


class RouterCommand(Record):
    """A change asked of the router (topic `sf.workspace.commands`), applied once per `command_id`.

    presence: `agent_id` goes `presence`. resolve: closes `escalation_id` with `resolution_code`.
    transfer: hands `escalation_id` to `to_agent` or to `to_queue` (`warm`: the customer is told
    who joins). human_replied: the agent answered (first response time). decided: a human approved
    (and ran) or rejected the entry's prepared actions; `decision` says how, so the workspace
    still knows after a restart.
    """

    command_id: str = Field(min_length=1, max_length=200)
    kind: CommandKind
    agent_id: str
    escalation_id: str | None = None
    presence: Presence | None = None
    to_agent: str | None = None
    to_queue: str | None = None
    warm: bool = False
    resolution_code: str | None = None
    decision: dict[str, Any] | None = Field(
        default=None, description="decided: {decision, agent_id, at, outcome, results, reply_id}"
    )
    at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _complete(self) -> RouterCommand:
        if self.kind == "presence" and self.presence is None:
            raise ValueError("a presence command needs `presence`")
        if self.kind != "presence" and self.escalation_id is None:
            raise ValueError(f"a {self.kind} command needs `escalation_id`")
        if self.kind == "decided" and not (self.decision and self.decision.get("decision") in ("approved", "rejected")):
            raise ValueError("a decided command needs `decision` with decision approved or rejected")
        if self.kind == "transfer" and (self.to_agent is None) == (self.to_queue is None):
            raise ValueError("a transfer names exactly one of `to_agent` or `to_queue`")
        return self

    def partition_key(self) -> str:
        return "router"
