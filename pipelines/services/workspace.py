"""`supportflow workspace`: the human agents' web page and the escalation router, in one process.

The router (`pipelines/services/escalation_router.py`, `RouterService`) keeps the queue: it reads
`sf.escalations` and `sf.workspace.commands`, and writes every change to `sf.workspace.state`.
This module puts a Starlette app in front of it (`web/workspace.html`, `web/workspace.js`):

- **Sign-in**: `POST /workspace/api/login` checks the agents file (pipelines/handover/auth.py)
  and sets an HttpOnly, SameSite=Strict cookie holding a JWT; scripts may send the same token as
  `Authorization: Bearer`. Failed logins are throttled per agent id and per client address (429).
- **Live queue**: `/workspace/ws` (a WebSocket, authenticated by the cookie or a first
  `{"type": "auth", "token": ...}` frame) sends the entries the agent may see, then every change
  as the router publishes it. The same socket takes actions as frames.
- **Actions** (HTTP `POST /workspace/api/entries/{id}/{verb}` or a WebSocket frame, one code
  path): reply, approve or reject the prepared actions, transfer (warm or cold, to an agent or a
  queue), resolve with a code, correct an intent, rate an AI reply; and presence. Each carries a
  client-generated `action_id`: replies, commands and feedback derive their ids from it, so a
  retried request changes nothing twice.
- **Authorization** on every route and every frame: an agent sees and answers only entries
  assigned to them or waiting in one of their queues; a supervisor, all. Anything else is 403
  with the reason; a missing or expired token is 401.

Approving runs the escalation's prepared actions through the topology's own authorize, execute
and guard operators (`pipelines/handover/approval.py`), with the idempotency keys the agent
prepared, so approving twice makes one refund; the customer is then told the outcome in the
playbook's words. A human's reply is an `OutboundMessage(author="human")` on `sf.outbound`,
built by the one reply formatter (`operators.format.outbound_reply`) with the channel's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from connectors.channels.conversation_view import ConversationView
from connectors.kafka import AsyncProducer, BackgroundReader, KafkaRecord
from operators.authorize import Authorize
from operators.execute import FALLBACK_REPLIES, Execute
from operators.format import outbound_reply, reply_id_for
from operators.guard import Guard
from operators.plan import PlaybookPlanner
from operators.protocols import OperatorContext, ReplyShaper, ToolSource
from pipelines.handover.approval import ApprovalRefused, ApprovalRunner
from pipelines.handover.auth import (
    AgentsFileError,
    Claims,
    LoginThrottle,
    TokenError,
    Tokens,
    check_password,
    ensure_demo_agents,
    load_agents,
    may_access,
    may_act,
)
from pipelines.runtime.clients import RuntimeClients, reply_shaper_for
from pipelines.runtime.settings import Settings
from pipelines.runtime.stage import SystemClock
from pipelines.runtime.topology import Topology
from schemas import ActionCall, Escalation, Feedback, Message, OutboundMessage, utcnow
from schemas.workspace import AgentSpec, Presence, QueueEntry, RouterCommand, WorkspaceState

log = logging.getLogger(__name__)

__all__ = [
    "COOKIE",
    "RESOLUTION_CODES",
    "Workspace",
    "WorkspaceError",
    "agents_file_for",
    "build_workspace_app",
    "run_workspace",
    "serve_workspace",
]

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
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


def derive_id(prefix: str, *parts: str) -> str:
    """A stable id from the parts: the same action (retried, replayed) always gets the same id."""
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


@dataclass
class Decision:
    """What a human decided about an entry's prepared actions; kept in the entry through a `decided` command."""

    decision: Literal["approved", "rejected"]
    agent_id: str
    at: datetime
    outcome: str
    results: list[dict[str, Any]] = field(default_factory=list)
    reply_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "agent_id": self.agent_id,
            "at": self.at.isoformat(),
            "outcome": self.outcome,
            "results": self.results,
            "reply_id": self.reply_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(
            data["decision"],
            data["agent_id"],
            datetime.fromisoformat(data["at"]),
            data["outcome"],
            list(data.get("results") or []),
            data.get("reply_id"),
        )


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier).total_seconds())


class RouterLike(Protocol):
    """What the web layer needs of the RouterService (pipelines/services/escalation_router.py)."""

    async def submit(self, cmd: RouterCommand) -> None: ...

    async def submit_and_wait(self, cmd: RouterCommand, timeout_s: float = 10.0) -> str: ...

    def subscribe(self) -> asyncio.Queue[WorkspaceState]: ...

    def unsubscribe(self, queue: asyncio.Queue[WorkspaceState]) -> None: ...

    def entry(self, escalation_id: str) -> QueueEntry | None: ...

    def visible_to(self, agent_id: str) -> list[QueueEntry]: ...

    def agent_state(self, agent_id: str) -> Any: ...

    def position(self, escalation_id: str) -> int | None: ...

    def expected_wait_s(self, escalation_id: str) -> float | None: ...


class Workspace:
    """Everything behind the page: who signed in, what they may see, and what their actions do."""

    def __init__(
        self,
        agents: list[AgentSpec],
        router: RouterLike,
        publish: Callable[[str, str | None, bytes], Awaitable[None]],
        tokens: Tokens,
        throttle: LoginThrottle,
        approvals: ApprovalRunner,
        shaper: ReplyShaper,
        snapshots: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        outbound_topic: str = "sf.outbound",
        feedback_topic: str = "sf.feedback",
        secure_cookie: bool = False,
        queues: list[str] | None = None,
    ) -> None:
        self.agents = {agent.agent_id: agent for agent in agents}
        self.router = router
        self.publish = publish
        self.tokens = tokens
        self.throttle = throttle
        self.approvals = approvals
        self.shaper = shaper
        self.snapshots = snapshots
        self.outbound_topic = outbound_topic
        self.feedback_topic = feedback_topic
        self.secure_cookie = secure_cookie
        self.view = ConversationView()
        self.decisions: dict[str, Decision] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # where a conversation may be transferred: every queue an agent serves or a skill is routed to
        named = {q for agent in agents for q in agent.queues} | set(queues or []) | {"general"}
        self.queues = sorted(named - {"*"})
        self.intents = approvals.intents()

    # --- who is asking -------------------------------------------------------------------------

    async def login(self, agent_id: str, password: str, client: str) -> tuple[AgentSpec, str]:
        wait = self.throttle.retry_after(agent_id, client)
        if wait is not None:
            seconds = max(1, round(wait))
            raise WorkspaceError(429, f"too many failed sign-ins; try again in {seconds} s", retry_after_s=seconds)
        # scrypt takes ~50 ms of CPU by design: off the event loop, so live updates keep flowing
        agent = await asyncio.to_thread(check_password, self.agents, agent_id, password)
        if agent is None:
            self.throttle.failed(agent_id, client)
            raise WorkspaceError(401, "unknown agent id or wrong password")
        self.throttle.succeeded(agent_id)
        return agent, self.tokens.issue(agent.agent_id)

    def authenticate(self, token: str | None) -> tuple[AgentSpec, Claims]:
        if not token:
            raise WorkspaceError(401, "sign in first")
        try:
            claims = self.tokens.verify(token)
        except TokenError as exc:
            raise WorkspaceError(401, str(exc)) from None
        agent = self.agents.get(claims.agent_id)
        if agent is None:
            raise WorkspaceError(401, "this agent is no longer in the agents file")
        return agent, claims

    def entry_for(self, agent: AgentSpec, escalation_id: str) -> QueueEntry:
        """The entry, if this agent may see it: 404 when there is none, 403 when it is someone else's."""
        entry = self.router.entry(escalation_id)
        if entry is None:
            raise WorkspaceError(404, f"no conversation {escalation_id} in the workspace")
        if not may_access(agent, entry):
            raise WorkspaceError(
                403,
                f"conversation {escalation_id} is not assigned to you and not waiting in one of your queues "
                f"({', '.join(agent.queues)})",
            )
        return entry

    def visible(self, agent: AgentSpec) -> list[QueueEntry]:
        entries = self.router.visible_to(agent.agent_id)
        return [entry for entry in entries if may_access(agent, entry)]  # the router's rule, checked again here

    # --- what they see -------------------------------------------------------------------------

    def summary(self, entry: QueueEntry) -> dict[str, Any]:
        """One row of the queue list."""
        esc = entry.escalation
        last = entry.follow_ups[-1] if entry.follow_ups else esc
        profile = esc.profile
        position = self.router.position(entry.escalation_id)
        return {
            "escalation_id": entry.escalation_id,
            "conversation_id": entry.conversation_id,
            "customer_id": entry.customer_id,
            "customer_name": profile.display_name if profile and profile.display_name else entry.customer_id,
            "vip_tier": profile.vip_tier if profile else "standard",
            "channel": last.channel,
            "queue": entry.queue,
            "skill": entry.skill,
            "language": entry.language,
            "priority": esc.priority,
            "priority_score": entry.priority_score,
            "status": entry.status,
            "agent_id": entry.agent_id,
            "reason": esc.reason,
            "text": last.text[:160],
            "follow_ups": len(entry.follow_ups),
            "needs_approval": bool(self._prepared(entry)) and self._decision(entry) is None,
            "enqueued_at": entry.enqueued_at.isoformat(),
            "position": position,
        }

    async def detail(self, agent: AgentSpec, entry: QueueEntry) -> dict[str, Any]:
        """The conversation panel: the entry, its transcript, the context and what may be done."""
        esc = entry.escalation
        decision = self._decision(entry)
        trend = list(esc.sentiment_trend)
        for follow_up in entry.follow_ups:
            if follow_up.nlu is not None:
                trend.append(follow_up.nlu.sentiment.score)
        return {
            "entry": entry.model_dump(mode="json"),
            "summary": self.summary(entry),
            "transcript": await self.transcript(entry),
            "sentiment_trend": trend[-20:],
            "prepared_actions": [step.model_dump(mode="json") for step in self._prepared(entry)],
            "decision": decision.as_json() if decision else None,
            "position": self.router.position(entry.escalation_id),
            "expected_wait_s": self.router.expected_wait_s(entry.escalation_id),
            "assigned_to_me": entry.agent_id == agent.agent_id,
            "may_act": may_act(agent, entry),
        }

    async def transcript(self, entry: QueueEntry) -> list[dict[str, Any]]:
        """The whole conversation, oldest first: the store's copy, the escalations' context, and what
        this process saw go by since (human replies, notices), each message once."""
        items: dict[str, dict[str, Any]] = {}

        def put(item_id: str, role: str, text: str, at: datetime | str, **extra: Any) -> None:
            when = at if isinstance(at, str) else at.isoformat()
            items.setdefault(item_id, {"id": item_id, "role": role, "text": text, "at": when, **extra})

        for esc in [entry.escalation, *entry.follow_ups]:
            for turn in esc.history:
                if turn.role == "agent":
                    if turn.text.startswith("[handed to a human"):
                        continue
                    put(reply_id_for(turn.message_id), "agent", turn.text, turn.at, in_reply_to=turn.message_id)
                else:
                    put(turn.message_id, turn.role, turn.text, turn.at)
            intent = esc.nlu.intent if esc.nlu else None
            put(esc.message_id, "customer", esc.text, esc.created_at, intent=intent, escalated=esc.reason)
        if self.snapshots is not None:
            try:
                snapshot = await asyncio.wait_for(self.snapshots(entry.conversation_id), 2.0)
            except Exception as exc:  # the store is a bonus here: the escalation carries the context
                log.warning("no stored transcript for %s: %s", entry.conversation_id, exc)
                snapshot = None
            for row in (snapshot or {}).get("messages", []):
                put(row["message_id"], row["role"], row["text"], row["at"], in_reply_to=row.get("in_reply_to"))
        for item in self.view.conversation(entry.conversation_id) or []:
            record = item.record
            if item.kind == "message":
                put(item.id, "customer", record["text"], record["received_at"])
            elif item.kind == "reply":
                put(item.id, record.get("author", "agent"), record["text"], record["created_at"],
                    in_reply_to=item.in_reply_to)  # fmt: skip
        for item in items.values():
            # the AI's replies have ids derived from the message they answer; others (the router's
            # notices: who joined, the expected wait) are the system's, and are not rated
            if item["role"] == "agent" and item["id"] != reply_id_for(item.get("in_reply_to") or ""):
                item["role"] = "system"
        return sorted(items.values(), key=lambda i: (datetime.fromisoformat(i["at"]), i["role"] != "customer"))

    def directory(self) -> dict[str, Any]:
        """Who and where a conversation may be transferred to, and the lists the page offers."""
        agents = []
        for agent in self.agents.values():
            state = self.router.agent_state(agent.agent_id)
            presence = getattr(state, "presence", "offline") if state is not None else "offline"
            agents.append({"agent_id": agent.agent_id, "display_name": agent.display_name, "presence": presence,
                           "queues": agent.queues, "role": agent.role})  # fmt: skip
        return {
            "agents": agents,
            "queues": self.queues,
            "intents": self.intents,
            "resolution_codes": list(RESOLUTION_CODES),
        }

    def me(self, agent: AgentSpec, claims: Claims | None = None) -> dict[str, Any]:
        state = self.router.agent_state(agent.agent_id)
        return {
            "agent_id": agent.agent_id,
            "display_name": agent.display_name,
            "role": agent.role,
            "queues": agent.queues,
            "skills": agent.skills,
            "languages": agent.languages,
            "capacity": agent.capacity,
            "presence": getattr(state, "presence", "offline") if state is not None else "offline",
            "expires_at": claims.expires_at if claims else None,
        }

    # --- what they do --------------------------------------------------------------------------

    async def perform(self, agent: AgentSpec, action: Any) -> dict[str, Any]:
        """Run one action for this agent, after checking they may; WorkspaceError otherwise."""
        if isinstance(action, PresenceAction):
            return await self._presence(agent, action)
        entry = self.entry_for(agent, action.escalation_id)
        if isinstance(action, OpenAction):
            return await self.detail(agent, entry)
        if isinstance(action, RateAction | CorrectIntentAction):
            return await self._feedback(agent, entry, action)
        if not may_act(agent, entry):
            raise WorkspaceError(
                403,
                f"conversation {entry.escalation_id} is waiting in queue {entry.queue!r}: only the agent it is "
                "assigned to (or a supervisor) may answer it; go online and the router assigns it",
            )
        if entry.status == "resolved":
            raise WorkspaceError(409, f"conversation {entry.escalation_id} is already resolved")
        if isinstance(action, ReplyAction):
            return await self._reply(agent, entry, action)
        if isinstance(action, ApproveAction | RejectAction):
            lock = self._locks.setdefault(entry.escalation_id, asyncio.Lock())
            async with lock:  # one decision at a time per entry; the keys make a repeat harmless anyway
                if isinstance(action, ApproveAction):
                    return await self._approve(agent, entry, action)
                return await self._reject(agent, entry, action)
        if isinstance(action, TransferAction):
            return await self._transfer(agent, entry, action)
        if isinstance(action, ResolveAction):
            return await self._resolve(agent, entry, action)
        raise WorkspaceError(400, f"unknown action {type(action).__name__}")

    def _latest(self, entry: QueueEntry) -> Escalation:
        """The customer's latest message in this conversation: replies go to its channel and address."""
        return entry.follow_ups[-1] if entry.follow_ups else entry.escalation

    async def _send(self, entry: QueueEntry, reply_id: str, text: str) -> OutboundMessage:
        latest = self._latest(entry)
        message = outbound_reply(
            self.shaper,
            reply_id=reply_id,
            in_reply_to=latest.message_id,
            conversation_id=entry.conversation_id,
            customer_id=entry.customer_id,
            channel=latest.channel,
            recipient=latest.recipient,
            text=text,
            author="human",
        )
        await self.publish(self.outbound_topic, message.partition_key(), message.to_bytes())
        self.view.add_record(message)  # shown in the transcript at once, before it comes back round
        return message

    async def _command(
        self, agent: AgentSpec, action_id: str, kind: str, wait: bool = True, **fields: Any
    ) -> RouterCommand:
        """Put the command on the router's log; with `wait`, a command the router refuses is a 409 here."""
        command = RouterCommand(
            command_id=derive_id("c-", kind, agent.agent_id, action_id),
            kind=kind,  # type: ignore[arg-type]
            agent_id=agent.agent_id,
            at=utcnow(),
            **fields,
        )
        if not wait:
            await self.router.submit(command)
            return command
        try:
            verdict = await self.router.submit_and_wait(command, timeout_s=10.0)
        except TimeoutError:
            raise WorkspaceError(503, "the router did not answer in time; try again (it is applied once)") from None
        if verdict.startswith("rejected"):
            raise WorkspaceError(409, f"the router refused it: {verdict.removeprefix('rejected: ')}")
        return command

    async def _reply(self, agent: AgentSpec, entry: QueueEntry, action: ReplyAction) -> dict[str, Any]:
        reply_id = derive_id("h-", "reply", entry.escalation_id, action.action_id)
        message = await self._send(entry, reply_id, action.text)
        await self._command(agent, action.action_id, "human_replied", wait=False, escalation_id=entry.escalation_id)
        return {"reply_id": reply_id, "channel": message.channel, "text": message.text}

    def _prepared(self, entry: QueueEntry) -> list[ActionCall]:
        """The prepared actions of the entry's escalations, in order, each key once."""
        seen: set[str] = set()
        steps = []
        for esc in [entry.escalation, *entry.follow_ups]:
            for step in esc.prepared_actions:
                if step.idempotency_key not in seen:
                    seen.add(step.idempotency_key)
                    steps.append(step)
        return steps

    def _task_intent(self, entry: QueueEntry) -> str | None:
        for esc in [entry.escalation, *entry.follow_ups]:
            if esc.prepared_actions and esc.task_intent:
                return esc.task_intent
        return None

    def _decision(self, entry: QueueEntry) -> Decision | None:
        """This process's latest decision, else the one the router keeps in the entry (after a restart)."""
        if entry.escalation_id in self.decisions:
            return self.decisions[entry.escalation_id]
        return Decision.from_json(entry.decision) if entry.decision else None

    async def _record(self, agent: AgentSpec, entry: QueueEntry, action_id: str, decision: Decision) -> None:
        self.decisions[entry.escalation_id] = decision
        await self._command(
            agent, action_id, "decided", wait=False, escalation_id=entry.escalation_id, decision=decision.as_json()
        )

    async def _approve(self, agent: AgentSpec, entry: QueueEntry, action: ApproveAction) -> dict[str, Any]:
        earlier = self._decision(entry)
        if earlier is not None and earlier.decision == "rejected":
            raise WorkspaceError(409, f"{earlier.agent_id} already rejected these actions")
        if earlier is not None and earlier.outcome == "succeeded":
            return {**earlier.as_json(), "repeated": True}
        prepared = self._prepared(entry)
        if not prepared:
            raise WorkspaceError(409, "this conversation has no prepared action to approve")
        intent = self._task_intent(entry)
        if intent is None:
            raise WorkspaceError(409, "the prepared actions do not say which task they belong to; act by hand")
        try:  # the agent's own authorize -> execute -> guard (pipelines/handover/approval.py)
            done = await self.approvals.run(entry, prepared, intent)
        except ApprovalRefused as refused:
            raise WorkspaceError(422, f"the action policy refuses this: {refused}") from None
        outcome, results = done.outcome, done.results
        text = done.reply
        if text is None:
            log.warning("approval outcome of %s not sent as written: %s", entry.escalation_id, done.blocked)
            text = APPROVED_AND_DONE if outcome == "succeeded" else FALLBACK_REPLIES["failed"]
        # one message per outcome: a repeat is the same message, a success after an outage a new one
        reply_id = derive_id("h-", "approval", entry.escalation_id, outcome, *(s.idempotency_key for s in prepared))
        await self._send(entry, reply_id, text)
        await self._command(agent, action.action_id, "human_replied", wait=False, escalation_id=entry.escalation_id)
        decision = Decision(
            "approved",
            agent.agent_id,
            utcnow(),
            outcome,
            [r.model_dump(mode="json") for r in results],
            reply_id,
        )
        if outcome != "failed":  # a backend that was unavailable may be tried again, with the same keys
            await self._record(agent, entry, action.action_id, decision)
        return {**decision.as_json(), "reply_text": text}

    async def _reject(self, agent: AgentSpec, entry: QueueEntry, action: RejectAction) -> dict[str, Any]:
        earlier = self._decision(entry)
        if earlier is not None and earlier.decision == "approved" and earlier.outcome == "succeeded":
            raise WorkspaceError(409, f"{earlier.agent_id} already approved these actions and they ran")
        if not self._prepared(entry):
            raise WorkspaceError(409, "this conversation has no prepared action to reject")
        text = action.note.strip() or "I'm sorry, we can't go ahead with that request as it stands."
        reply_id = derive_id("h-", "rejection", entry.escalation_id)
        await self._send(entry, reply_id, text)
        await self._command(agent, action.action_id, "human_replied", wait=False, escalation_id=entry.escalation_id)
        if earlier is not None and earlier.decision == "rejected":
            return earlier.as_json()
        decision = Decision("rejected", agent.agent_id, utcnow(), "rejected", [], reply_id)
        await self._record(agent, entry, action.action_id, decision)
        return decision.as_json()

    async def _transfer(self, agent: AgentSpec, entry: QueueEntry, action: TransferAction) -> dict[str, Any]:
        if action.to_agent is not None:
            if action.to_agent not in self.agents:
                raise WorkspaceError(422, f"no agent {action.to_agent!r}")
            if action.to_agent == entry.agent_id:
                raise WorkspaceError(422, f"the conversation is already with {action.to_agent}")
        elif action.to_queue not in self.queues:
            raise WorkspaceError(422, f"no queue {action.to_queue!r}; queues: {', '.join(self.queues)}")
        command = await self._command(
            agent,
            action.action_id,
            "transfer",
            escalation_id=entry.escalation_id,
            to_agent=action.to_agent,
            to_queue=action.to_queue,
            warm=action.warm,
        )
        return {"command_id": command.command_id}

    async def _resolve(self, agent: AgentSpec, entry: QueueEntry, action: ResolveAction) -> dict[str, Any]:
        if action.resolution_code not in RESOLUTION_CODES:
            raise WorkspaceError(422, f"unknown resolution code; one of {', '.join(RESOLUTION_CODES)}")
        now = utcnow()
        command = await self._command(
            agent,
            action.action_id,
            "resolve",
            escalation_id=entry.escalation_id,
            resolution_code=action.resolution_code,
        )
        feedback = Feedback(
            feedback_id=Feedback.derive_id(action.action_id, "resolution"),
            conversation_id=entry.conversation_id,
            message_id=entry.escalation.message_id,
            escalation_id=entry.escalation_id,
            kind="resolution",
            resolution_code=action.resolution_code,
            original_intent=entry.escalation.nlu.intent if entry.escalation.nlu else None,
            comment=action.comment,
            author=agent.agent_id,
            agent_id=agent.agent_id,
            channel=self._latest(entry).channel,
            handle_time_s=_seconds(now, entry.assigned_at or entry.enqueued_at),
            first_response_s=_seconds(entry.first_human_reply_at, entry.enqueued_at),
            at=now,
        )
        await self.publish(self.feedback_topic, feedback.partition_key(), feedback.to_bytes())
        return {"command_id": command.command_id, "feedback_id": feedback.feedback_id}

    async def _feedback(
        self, agent: AgentSpec, entry: QueueEntry, action: RateAction | CorrectIntentAction
    ) -> dict[str, Any]:
        escalations = [entry.escalation, *entry.follow_ups]
        if isinstance(action, CorrectIntentAction):
            if action.corrected_intent not in self.intents:
                raise WorkspaceError(422, f"unknown intent {action.corrected_intent!r}")
            source = next((e for e in escalations if e.message_id == action.message_id), None)
            if source is None:
                raise WorkspaceError(422, "intents can be corrected on the customer's messages of this conversation")
            feedback = Feedback(
                feedback_id=Feedback.derive_id(action.action_id, "intent_correction"),
                conversation_id=entry.conversation_id,
                message_id=action.message_id,
                escalation_id=entry.escalation_id,
                kind="intent_correction",
                original_intent=source.nlu.intent if source.nlu else None,
                corrected_intent=action.corrected_intent,
                author=agent.agent_id,
                agent_id=agent.agent_id,
                channel=source.channel,
            )
        else:
            transcript = await self.transcript(entry)
            reply = next((i for i in transcript if i["id"] == action.message_id and i["role"] == "agent"), None)
            if reply is None:
                raise WorkspaceError(422, "only the AI agent's replies in this conversation can be rated")
            feedback = Feedback(
                feedback_id=Feedback.derive_id(action.action_id, "reply_rating"),
                conversation_id=entry.conversation_id,
                message_id=action.message_id,
                escalation_id=entry.escalation_id,
                kind="reply_rating",
                rating=action.rating,
                comment=action.comment,
                author=agent.agent_id,
                agent_id=agent.agent_id,
                channel=entry.escalation.channel,
            )
        await self.publish(self.feedback_topic, feedback.partition_key(), feedback.to_bytes())
        return {"feedback_id": feedback.feedback_id}

    async def _presence(self, agent: AgentSpec, action: PresenceAction) -> dict[str, Any]:
        command = await self._command(agent, action.action_id, "presence", presence=action.presence)
        return {"command_id": command.command_id, "presence": action.presence}

    def on_record(self, record: KafkaRecord) -> None:
        """Messages and replies as they pass, for the transcripts (the store may lag a batch behind)."""
        if record.value is None:
            return
        record_type = Message if record.topic == "sf.messages" else OutboundMessage
        try:
            self.view.add_record(record_type.model_validate_json(record.value))
        except ValueError:
            return


# --- HTTP and WebSocket -------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return conn.cookies.get(COOKIE)


def _same_origin(conn: HTTPConnection) -> bool:
    """A browser's request from another site is refused: cookies ride along with those too."""
    origin = conn.headers.get("origin")
    if not origin:
        return True
    host = conn.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def build_workspace_app(workspace: Workspace, lifespan: Any = None) -> Starlette:
    """The page, its JSON API and the live WebSocket, over one Workspace."""

    async def page(_: Request) -> Response:
        return FileResponse(WEB_DIR / "workspace.html", headers={"cache-control": "no-store"})

    async def script(_: Request) -> Response:
        return FileResponse(
            WEB_DIR / "workspace.js", media_type="text/javascript", headers={"cache-control": "no-store"}
        )

    async def authorized(request: Request) -> tuple[AgentSpec, Claims]:
        if request.method == "POST":
            if not _same_origin(request):
                raise WorkspaceError(403, "requests from another site are refused")
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise WorkspaceError(415, "send JSON (content-type: application/json)")
        return workspace.authenticate(_token_of(request))

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            raise WorkspaceError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise WorkspaceError(400, "the body must be a JSON object")
        return data

    def handler(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except WorkspaceError as exc:
                response = _error(exc.status, exc.message)
                if exc.retry_after_s is not None:
                    response.headers["retry-after"] = str(round(exc.retry_after_s))
                return response
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
                return _error(422, problems)

        return wrapped

    @handler
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            raise WorkspaceError(403, "requests from another site are refused")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise WorkspaceError(415, "send JSON (content-type: application/json)")
        credentials = LoginRequest.model_validate(await body(request))
        client = request.client.host if request.client else "unknown"
        agent, token = await workspace.login(credentials.agent_id, credentials.password, client)
        response = JSONResponse({"token": token, "agent": workspace.me(agent, workspace.tokens.verify(token))})
        response.set_cookie(COOKIE, token, max_age=int(workspace.tokens.ttl_s), httponly=True, samesite="strict",
                            secure=workspace.secure_cookie, path="/workspace")  # fmt: skip
        return response

    async def logout(request: Request) -> Response:
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, path="/workspace")
        return response

    @handler
    async def me(request: Request) -> Response:
        agent, claims = await authorized(request)
        return JSONResponse(workspace.me(agent, claims))

    @handler
    async def queue(request: Request) -> Response:
        agent, _ = await authorized(request)
        return JSONResponse({"entries": [workspace.summary(e) for e in workspace.visible(agent)]})

    @handler
    async def directory(request: Request) -> Response:
        await authorized(request)
        return JSONResponse(workspace.directory())

    @handler
    async def entry(request: Request) -> Response:
        agent, _ = await authorized(request)
        action = OpenAction(type="open", escalation_id=request.path_params["escalation_id"])
        return JSONResponse(await workspace.perform(agent, action))

    @handler
    async def act(request: Request) -> Response:
        agent, _ = await authorized(request)
        verb = request.path_params["verb"]
        if verb not in VERBS:
            raise WorkspaceError(404, f"no action {verb!r}; actions: {', '.join(sorted(VERBS))}")
        data = {
            **await body(request),
            "type": verb.replace("-", "_"),
            "escalation_id": request.path_params["escalation_id"],
        }
        return JSONResponse(await workspace.perform(agent, ACTION.validate_python(data)))

    @handler
    async def presence(request: Request) -> Response:
        agent, _ = await authorized(request)
        data = {**await body(request), "type": "presence"}
        return JSONResponse(await workspace.perform(agent, ACTION.validate_python(data)))

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/", lambda _: RedirectResponse("/workspace")),
        Route("/healthz", health),
        Route("/workspace", page),
        Route("/workspace/workspace.js", script),
        Route("/workspace/api/login", login, methods=["POST"]),
        Route("/workspace/api/logout", logout, methods=["POST"]),
        Route("/workspace/api/me", me),
        Route("/workspace/api/queue", queue),
        Route("/workspace/api/directory", directory),
        Route("/workspace/api/presence", presence, methods=["POST"]),
        Route("/workspace/api/entries/{escalation_id}", entry),
        Route("/workspace/api/entries/{escalation_id}/{verb}", act, methods=["POST"]),
        WebSocketRoute("/workspace/ws", LiveSocket(workspace).endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


class LiveSocket:
    """`/workspace/ws`: the agent's queue as it changes, and their actions as frames.

    Server → client: `welcome` {agent, entries}, `entry` {entry: row}, `removed` {escalation_id},
    `agent` {agent: state}, `result` {request_id, result}, `error` {request_id?, status, error}.
    Client → server: `auth` {token} (unless the cookie came with the handshake), `ping`, and any
    action as in the HTTP API with `type` and an optional `request_id`. Every frame is checked
    against the token's expiry and the entry's assignment; an expired token closes the socket (4401).
    """

    AUTH_TIMEOUT_S = 10.0

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def endpoint(self, websocket: WebSocket) -> None:
        if not _same_origin(websocket):
            await websocket.close(code=4403, reason="requests from another site are refused")
            return
        await websocket.accept()
        token = _token_of(websocket)
        try:
            if token is None:
                token = await self._await_auth(websocket)
            try:
                agent, claims = self.workspace.authenticate(token)
            except WorkspaceError as exc:
                await websocket.send_json({"type": "error", "status": exc.status, "error": exc.message})
                await websocket.close(code=4401)
                return
            await self._serve(websocket, agent, claims)
        except (WebSocketDisconnect, TimeoutError):
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=4401)

    async def _await_auth(self, websocket: WebSocket) -> str | None:
        raw = await asyncio.wait_for(websocket.receive_text(), self.AUTH_TIMEOUT_S)
        with contextlib.suppress(ValueError):
            frame = json.loads(raw)
            if isinstance(frame, dict) and frame.get("type") == "auth" and isinstance(frame.get("token"), str):
                return str(frame["token"])
        return None

    async def _serve(self, websocket: WebSocket, agent: AgentSpec, claims: Claims) -> None:
        workspace = self.workspace
        changes = workspace.router.subscribe()
        shown: set[str] = set()
        send_lock = asyncio.Lock()

        async def send(frame: dict[str, Any]) -> None:
            async with send_lock:
                await websocket.send_json(frame)

        entries = workspace.visible(agent)
        shown.update(e.escalation_id for e in entries)
        await send({"type": "welcome", "agent": workspace.me(agent, claims),
                    "entries": [workspace.summary(e) for e in entries]})  # fmt: skip
        pusher = asyncio.create_task(self._push(send, agent, changes, shown))
        try:
            while True:
                raw = await websocket.receive_text()
                await self._frame(send, websocket, agent, claims, raw)
        finally:
            pusher.cancel()
            workspace.router.unsubscribe(changes)

    async def _push(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        agent: AgentSpec,
        changes: asyncio.Queue[WorkspaceState],
        shown: set[str],
    ) -> None:
        workspace = self.workspace
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            while True:
                state = await changes.get()
                if state.entry is not None:
                    entry = state.entry
                    if may_access(agent, entry):
                        shown.add(entry.escalation_id)
                        await send({"type": "entry", "entry": workspace.summary(entry)})
                    elif entry.escalation_id in shown:
                        shown.discard(entry.escalation_id)
                        await send({"type": "removed", "escalation_id": entry.escalation_id})
                if state.agent is not None and (state.agent.agent_id == agent.agent_id or agent.role == "supervisor"):
                    await send({"type": "agent", "agent": state.agent.model_dump(mode="json")})

    async def _frame(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        websocket: WebSocket,
        agent: AgentSpec,
        claims: Claims,
        raw: str,
    ) -> None:
        request_id = None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise WorkspaceError(400, "a frame is a JSON object")
            request_id = data.pop("request_id", None)
            if claims.expires_at <= utcnow().timestamp():
                await send({"type": "error", "request_id": request_id, "status": 401,
                            "error": "the session has expired; sign in again"})  # fmt: skip
                await websocket.close(code=4401)
                return
            if data.get("type") == "ping":
                await send({"type": "pong", "request_id": request_id})
                return
            action = ACTION.validate_python(data)
            result = await self.workspace.perform(agent, action)
            await send({"type": "result", "request_id": request_id, "action": action.type, "result": result})
        except WorkspaceError as exc:
            await send({"type": "error", "request_id": request_id, "status": exc.status, "error": exc.message})
        except ValueError as exc:  # bad JSON or a frame that does not validate
            message = str(exc)
            if isinstance(exc, ValidationError):
                message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'frame'}: {e['msg']}" for e in exc.errors())
            await send({"type": "error", "request_id": request_id, "status": 422, "error": f"invalid frame: {message}"})


# --- the process --------------------------------------------------------------------------------


def agents_file_for(settings: Settings) -> tuple[Path, dict[str, str] | None]:
    """The agents file, and the demo passwords if this call created the demo file (show them once)."""
    if settings.workspace_agents_file is not None:
        return Path(settings.workspace_agents_file), None
    path = settings.data_dir.resolve() / DEMO_AGENTS_FILE
    return path, ensure_demo_agents(path)


def _approvals(topology: Topology, playbooks: dict[str, Any], tools: ToolSource) -> ApprovalRunner:
    """The topology's own authorize, execute and guard operators, as it configures them (defaults if absent)."""
    clients = RuntimeClients()
    ctx = OperatorContext(tables={}, clock=SystemClock(), tools=tools, clients=clients)
    authorize, execute, guard = (topology.operator(kind) or kind() for kind in (Authorize, Execute, Guard))
    for operator in (authorize, execute, guard):
        operator.warm_up(ctx)
    return ApprovalRunner(authorize, execute, guard, playbooks, tools)


async def run_workspace(
    settings: Settings,
    topology: Topology,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    port: int | None = None,
) -> None:
    """The router and the web app on one event loop until `stop` is set."""
    import uvicorn

    from connectors.backends.registry import ToolRegistry
    from operators.playbooks import DEFAULT_FOLDER, load_playbooks
    from pipelines.services.escalation_router import RouterService

    # the caller (the CLI, `supportflow run`) wrote the demo file and showed its passwords
    agents = load_agents(agents_file_for(settings)[0])
    plan = topology.operator(PlaybookPlanner)
    playbooks = load_playbooks(plan.config.playbooks_dir if plan is not None else DEFAULT_FOLDER)  # type: ignore[attr-defined]
    secret = settings.workspace_secret.get_secret_value().encode() if settings.workspace_secret else os.urandom(32)

    service = RouterService(settings, topology, agents)
    await service.warm_up()
    producer = AsyncProducer(settings.kafka_client_config())
    tools = ToolRegistry.from_settings(settings)
    store = None
    if settings.database_url is not None:
        from connectors.postgres import PostgresStore

        store = PostgresStore(settings.database_url.get_secret_value(), min(5, settings.database_pool_size))
    workspace = Workspace(
        agents,
        service,
        producer.send,
        Tokens(secret, settings.workspace_token_ttl_s),
        LoginThrottle(settings.workspace_login_max_failures, settings.workspace_login_window_s),
        _approvals(topology, playbooks, tools),
        reply_shaper_for(topology, RuntimeClients(settings)),
        snapshots=store.conversation_snapshot if store is not None else None,
        outbound_topic=topology.topic_for(OutboundMessage) or "sf.outbound",
        feedback_topic=topology.topic_for(Feedback) or "sf.feedback",
        secure_cookie=(settings.public_base_url or "").startswith("https://"),
        queues=list(settings.workspace_queue_by_skill.values()),
    )
    watched = [t for t in (topology.topic_for(Message), topology.topic_for(OutboundMessage)) if t]
    reader = BackgroundReader(settings.kafka_client_config(), watched, workspace.on_record, settings.fetch_max_wait_ms)
    reader.start(asyncio.get_running_loop())

    config = uvicorn.Config(
        build_workspace_app(workspace),
        host=settings.workspace_host,
        port=settings.workspace_port if port is None else port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the caller owns the signals
    routing = asyncio.create_task(service.run(stop), name="router")
    serving = asyncio.create_task(server.serve(), name="workspace-http")
    try:
        while not server.started:
            if serving.done() or routing.done():
                break
            await asyncio.sleep(0.02)
        if server.started:
            log.info("workspace serving on http://%s:%d/workspace", settings.workspace_host, config.port)
            if ready is not None:
                ready.set()
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, routing, serving], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        stop.set()
        server.should_exit = True
        for task in (serving, routing):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        reader.close()
        producer.close()
        await tools.close()
        if store is not None:
            await store.close()
    for task in (routing, serving):  # a part that failed on its own fails the process
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def serve_workspace(settings: Settings, ready_file: Path | None, port: int | None = None) -> None:
    """The `supportflow workspace` process: run until SIGTERM/SIGINT."""
    from pipelines.runtime.topology import load_topology
    from pipelines.services.sinks import serve_until_stopped

    topology = load_topology(settings.topology_file)
    try:
        serve_until_stopped(
            settings, ready_file, lambda stop, ready: run_workspace(settings, topology, stop, ready, port)
        )
    except AgentsFileError as exc:
        raise SystemExit(f"workspace: {exc}") from None
