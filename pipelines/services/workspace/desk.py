"""The workspace's service: who signed in, what they may see, and what their actions do.

It holds no connection of its own: the router, the publisher and the approvals are handed in."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from connectors.channels.conversation_view import ConversationView
from connectors.kafka import KafkaRecord
from operators.execute import FALLBACK_REPLIES
from operators.format import outbound_reply, reply_id_for
from operators.protocols import ReplyShaper
from pipelines.handover.approval import ApprovalRefused, ApprovalRunner
from pipelines.handover.auth import (
    Claims,
    LoginThrottle,
    TokenError,
    Tokens,
    check_password,
    may_access,
    may_act,
)
from pipelines.services.workspace.requests import (
    APPROVED_AND_DONE,
    RESOLUTION_CODES,
    ApproveAction,
    CorrectIntentAction,
    OpenAction,
    PresenceAction,
    RateAction,
    RejectAction,
    ReplyAction,
    ResolveAction,
    TransferAction,
    WorkspaceError,
)
from schemas import ActionCall, Escalation, Feedback, Message, OutboundMessage, utcnow
from schemas.knowledge import Passage
from schemas.workspace import AgentSpec, QueueEntry, RouterCommand, WorkspaceState

if TYPE_CHECKING:
    from pipelines.services.workspace.knowledge import WorkspaceKnowledge

log = logging.getLogger(__name__)


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
        knowledge: WorkspaceKnowledge | None = None,
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
        self.knowledge = knowledge
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
        # counted as failed until proven right: concurrent guesses cannot all pass the check above
        attempt = self.throttle.failed(agent_id, client)
        # scrypt takes ~50 ms of CPU by design: off the event loop, so live updates keep flowing
        agent = await asyncio.to_thread(check_password, self.agents, agent_id, password)
        if agent is None:
            raise WorkspaceError(401, "unknown agent id or wrong password")
        self.throttle.succeeded(agent_id, client, attempt)
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
            "passages": [passage.model_dump(mode="json") for passage in self._passages(entry)],
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
            recipient_verified=latest.recipient_verified,
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

    def _passages(self, entry: QueueEntry) -> list[Passage]:
        """What the knowledge base found for the entry's hand-overs (reason knowledge_gap), each passage once."""
        seen: set[str] = set()
        passages = []
        for esc in [entry.escalation, *entry.follow_ups]:
            for passage in esc.passages:
                if passage.chunk_id not in seen:
                    seen.add(passage.chunk_id)
                    passages.append(passage)
        return passages

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
