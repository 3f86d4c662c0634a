"""The escalation router: a queue of hand-overs and a skill-, language- and load-aware assignment.

Pure and deterministic (no I/O, no clock: every call gets `now`), so the service around it
(pipelines/services/escalation_router.py) can rebuild it from the rows it published and replay input
records against it. Each call returns the `WorkspaceState` rows it changed; customer notices
and handback messages wait in an outbox (`drain_messages`).

The outbox is transactional: a message is first recorded in its entry's `outbox` (published with
the entry's row), then sent, then `mark_sent` clears it (the cleared row goes out with the next
change). A router restored from rows that still hold messages sends them again, under the same
ids, so a crash at any point neither loses a notice nor records one that was never sent.

Priority (`PriorityRule`, configurable):

    score = tier_weights[vip_tier] + severity_weights[severity] + per_waited_minute * minutes since enqueued

Higher goes first; ties go to the earlier entry, then the smaller escalation id. `severity` is
the escalation's priority (escalate already raises gold and platinum one step). Because the
waiting term grows at the same rate for every entry, the order of two waiting entries never
changes while they wait: a VIP weight of 20 is worth 20 / per_waited_minute minutes of waiting.
A conversation handed back to the queue keeps its original enqueue time, so it is not sent to
the back of the line.

Assignment: a waiting entry goes to an agent who is `online`, below `capacity`, has the entry's
skill (its intent, the intent's category, or `*`), its language (primary tag, or `*`) and its
queue (or `*`); among those, the lowest load (held / capacity, then held, then agent id). Entries
are served in priority order; one no agent can take waits without blocking those behind it.
`away` keeps what the agent holds but gives them nothing new; `offline` hands their open
conversations back to the queue.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from operators.format import outbound_reply
from operators.protocols import ReplyShaper
from schemas import (
    AgentSpec,
    AgentState,
    Escalation,
    Message,
    OutboundMessage,
    QueueEntry,
    RouterCommand,
    WorkspaceState,
)

__all__ = ["EscalationRouter", "PriorityRule", "RouterOptions", "notice_reply_id", "primary_language"]

MAX_AGENT_COMMANDS = 200  # presence command ids remembered per agent: far more than one uncommitted batch holds
MAX_FOLLOW_UPS = 200  # kept in an entry's row (the oldest go first), so a very long chat stays below Kafka's 1 MB


class PriorityRule(BaseModel):
    """How waiting escalations are ordered: see the module docstring for the formula.

    The defaults make a platinum customer worth 20 minutes of waiting, an urgent hand-over 30
    minutes more than a normal one. Set `per_waited_minute: 0` for strict tier/severity order.
    """

    model_config = ConfigDict(extra="forbid")

    tier_weights: dict[str, float] = Field(
        default_factory=lambda: {"standard": 0.0, "silver": 10.0, "gold": 20.0, "platinum": 40.0}
    )
    severity_weights: dict[str, float] = Field(
        default_factory=lambda: {"low": 0.0, "normal": 10.0, "high": 30.0, "urgent": 70.0}
    )
    per_waited_minute: float = Field(default=2.0, ge=0)
    publish_step: float | None = Field(
        default=None,
        gt=0,
        description="republish a waiting entry's row when its score moved this much; None: never (the score is "
        "refreshed in memory every tick, the order does not change, and a queue of 500 would republish 500 rows "
        "every few seconds)",
    )

    def base(self, vip_tier: str, severity: str) -> float:
        return self.tier_weights.get(vip_tier, 0.0) + self.severity_weights.get(severity, 0.0)

    def score(self, entry: QueueEntry, now: datetime) -> float:
        waited_min = max(0.0, (now - entry.enqueued_at).total_seconds() / 60)
        return round(self.base(entry.vip_tier, entry.severity) + self.per_waited_minute * waited_min, 3)

    def order_key(self, entry: QueueEntry) -> tuple[float, datetime, str]:
        """Sorts waiting entries best first; independent of `now` (the waiting term is linear)."""
        enqueued_min = entry.enqueued_at.timestamp() / 60
        return (self.per_waited_minute * enqueued_min - self.base(entry.vip_tier, entry.severity),
                entry.enqueued_at, entry.escalation_id)  # fmt: skip


class RouterOptions(BaseModel):
    """The router's other settings."""

    model_config = ConfigDict(extra="forbid")

    human_wait_timeout_s: float = Field(
        default=120.0, gt=0, description="waiting this long, the customer is told honestly and offered options"
    )
    default_handle_time_s: float = Field(
        default=300.0, gt=0, description="assumed time an agent holds a conversation, until some are resolved"
    )
    handle_time_window: int = Field(default=50, ge=1, description="resolved conversations the average is taken over")
    queue_by_skill: dict[str, str] = Field(
        default_factory=dict, description="intent or category -> queue name; unlisted ones go to `general`"
    )
    resolved_retention_s: float = Field(
        default=24 * 3600.0, gt=0, description="resolved entries are dropped from the table after this long"
    )


def primary_language(tag: str) -> str:
    """`en-GB` and `EN` are both `en`: agents are matched on the primary language subtag."""
    return tag.strip().lower().replace("_", "-").split("-", 1)[0]


KNOWLEDGE_GAP_LEAD = "I couldn't find a reliable answer to that in our help center, so I won't guess. "
"""Leads the queued notice of an escalation `answer` made because the knowledge base did not answer well enough."""


def notice_reply_id(escalation_id: str, kind: str) -> str:
    """The reply id of a customer notice: one per escalation and kind, so a replay sends it once."""
    return "n-" + hashlib.sha256(f"notice:{escalation_id}:{kind}".encode()).hexdigest()[:24]


def handback_message_id(escalation_id: str) -> str:
    return "hb-" + hashlib.sha256(f"handback:{escalation_id}".encode()).hexdigest()[:24]


def _without_known_turns(esc: Escalation, entry: QueueEntry) -> Escalation:
    """A follow-up keeps only the history turns its entry does not hold yet: each turn is stored once."""
    known = {(t.message_id, t.role) for e in [entry.escalation, *entry.follow_ups] for t in e.history}
    return esc.model_copy(update={"history": [t for t in esc.history if (t.message_id, t.role) not in known]})


def _snapshot(entry: QueueEntry) -> QueueEntry:
    """A copy the router will not change: its lists are copied, the records in them are never mutated."""
    return entry.model_copy(
        update={
            "follow_ups": list(entry.follow_ups),
            "transfers": list(entry.transfers),
            "notices": list(entry.notices),
            "outbox": list(entry.outbox),
            "applied_commands": list(entry.applied_commands),
        }
    )


def _agent_snapshot(state: AgentState) -> AgentState:
    return state.model_copy(update={"assigned": list(state.assigned), "applied_commands": list(state.applied_commands)})


def _message_key(message: Message | OutboundMessage) -> str:
    return message.reply_id if isinstance(message, OutboundMessage) else message.message_id


def _choice_in(text: str) -> str | None:
    """The option a customer picked after the no-human notice, if their message names one."""
    words = text.lower()
    if "call" in words or "phone" in words:
        return "callback"
    if "mail" in words:
        return "email"
    if "wait" in words or "stay" in words:
        return "wait"
    return None


class _AsWritten:
    """The shaper of a router built without one (the pure router's own tests): the text as one part."""

    def shape(self, channel: str, text: str) -> dict[str, Any]:
        return {"text": text, "parts": [text]}


class EscalationRouter:
    """The workspace queue and assignment; see the module docstring for the rules."""

    def __init__(
        self,
        agents: list[AgentSpec],
        rule: PriorityRule,
        categories: dict[str, str],
        options: RouterOptions | None = None,
        shaper: ReplyShaper | None = None,
    ) -> None:
        ids = [a.agent_id for a in agents]
        if len(ids) != len(set(ids)):
            raise ValueError("agent ids must be unique")
        self.specs: dict[str, AgentSpec] = {a.agent_id: a for a in agents}
        self.rule = rule
        self.categories = {k.lower(): v.lower() for k, v in categories.items()}
        self.options = options or RouterOptions()
        self.shaper: ReplyShaper = shaper or _AsWritten()
        self._reset()

    # ---- state -------------------------------------------------------------------------

    def _reset(self) -> None:
        self._entries: dict[str, QueueEntry] = {}
        self._agents: dict[str, AgentState] = {a: AgentState(agent_id=a) for a in self.specs}
        self._known: dict[str, str] = {}  # escalation id (first or follow-up) -> entry id
        self._open_by_conversation: dict[str, str] = {}
        self._waiting: list[tuple[tuple[float, datetime, str], str]] = []  # sorted by the rule's order key
        self._match_cache: dict[tuple[str, str, str], frozenset[str]] = {}
        self._handle_times: deque[float] = deque(maxlen=self.options.handle_time_window)
        self._resolved: deque[tuple[datetime, str]] = deque()
        self._changed: OrderedDict[str, None] = OrderedDict()
        self._published_assigned: dict[str, list[str]] = {}
        self._outbox: list[Message | OutboundMessage] = []
        self._outbox_owner: dict[str, str] = {}  # message or reply id -> the entry whose outbox holds it
        self._tombstones: list[str] = []
        self._latencies: list[float] = []
        self._outcomes: OrderedDict[str, str] = OrderedDict()

    def restore(self, states: Iterable[WorkspaceState]) -> None:
        """Rebuild from the table's rows in topic order (the latest row per key wins).

        Who holds what is taken from the entries, the truth of an assignment; an agent row only
        gives presence and the commands applied. Anything inconsistent that a crash between two
        rows could leave (an offline agent still holding a conversation) is put right by `tick`.
        """
        self._reset()
        entries: dict[str, QueueEntry] = {}
        agents: dict[str, AgentState] = {}
        for state in states:
            if state.entry is not None:
                entries[state.entry.escalation_id] = state.entry
            elif state.agent is not None:
                agents[state.agent.agent_id] = state.agent
        for agent_id, row in agents.items():
            self._agents[agent_id] = row.model_copy(update={"assigned": []})
            self._published_assigned[agent_id] = list(row.assigned)
        for entry in sorted(entries.values(), key=lambda e: (e.enqueued_at, e.escalation_id)):
            self._entries[entry.escalation_id] = entry
            self._known[entry.escalation_id] = entry.escalation_id
            for follow_up in entry.follow_ups:
                self._known[follow_up.escalation_id] = entry.escalation_id
            for message in entry.outbox:  # recorded, maybe never sent: send again under the same id
                self._queue_message(entry, message)
            if entry.status == "resolved":
                self._resolved.append((entry.resolved_at or entry.enqueued_at, entry.escalation_id))
                if entry.resolved_at and entry.assigned_at:
                    self._handle_times.append((entry.resolved_at - entry.assigned_at).total_seconds())
                continue
            self._open_by_conversation[entry.conversation_id] = entry.escalation_id
            if entry.status == "waiting":
                self._queue(entry)
            else:
                holder = self._agents.setdefault(entry.agent_id or "", AgentState(agent_id=entry.agent_id or ""))
                holder.assigned.append(entry.escalation_id)
        self._resolved = deque(sorted(self._resolved))
        for agent_id, state in self._agents.items():
            if state.assigned != self._published_assigned.get(agent_id, []):
                self._touch(state.key())

    def entry(self, escalation_id: str) -> QueueEntry | None:
        entry = self._entries.get(escalation_id)
        return _snapshot(entry) if entry is not None else None

    def agent_state(self, agent_id: str) -> AgentState | None:
        state = self._agents.get(agent_id)
        return _agent_snapshot(state) if state is not None else None

    def entries(self) -> list[QueueEntry]:
        """Every entry in the table, resolved ones included (a copy)."""
        return [_snapshot(e) for e in self._entries.values()]

    def waiting_count(self) -> int:
        return len(self._waiting)

    def visible_to(self, agent_id: str) -> list[QueueEntry]:
        """An agent's view: what they hold, then the waiting entries of their queues in priority order.

        A supervisor sees every open entry. An unknown agent sees nothing.
        """
        spec = self.specs.get(agent_id)
        if spec is None:
            return []
        held = [self._entries[e] for e in self._agents[agent_id].assigned]
        if spec.role == "supervisor":
            held += [e for e in self._entries.values() if e.status == "assigned" and e.agent_id != agent_id]
            queued = [self._entries[eid] for _, eid in self._waiting]
        else:
            queued = [self._entries[eid] for _, eid in self._waiting if self._in_queues(spec, self._entries[eid])]
        return [_snapshot(e) for e in [*held, *queued]]

    def position(self, escalation_id: str) -> int | None:
        """1-based place of a waiting entry among the waiting entries of its queue; None unless waiting."""
        entry = self._entries.get(escalation_id)
        if entry is None or entry.status != "waiting":
            return None
        place = 0
        for _, eid in self._waiting:
            if self._entries[eid].queue == entry.queue:
                place += 1
            if eid == escalation_id:
                return place
        return None

    def expected_wait_s(self, escalation_id: str) -> float | None:
        """An estimate: position × average handle time ÷ the capacity of the online agents who can take it.

        0 once assigned; None when resolved, unknown, or no agent who could take it is online.
        """
        entry = self._entries.get(escalation_id)
        if entry is None or entry.status == "resolved":
            return None
        if entry.status == "assigned":
            return 0.0
        slots = sum(self.specs[a].capacity for a in self._eligible(entry) if self._agents[a].presence == "online")
        position = self.position(escalation_id)
        if not slots or position is None:
            return None
        return round(position * self.average_handle_time_s() / slots, 1)

    def average_handle_time_s(self) -> float:
        if not self._handle_times:
            return self.options.default_handle_time_s
        return sum(self._handle_times) / len(self._handle_times)

    def outcome(self, command_id: str) -> str | None:
        """`applied`, `rejected: <why>` or `replayed` for a recent command this router saw."""
        return self._outcomes.get(command_id)

    def drain_messages(self) -> list[Message | OutboundMessage]:
        """Customer notices (for sf.outbound) and handbacks (for sf.messages) to send: publish the rows first."""
        out, self._outbox = self._outbox, []
        return out

    def mark_sent(self, messages: Iterable[Message | OutboundMessage]) -> None:
        """The broker has these: take them out of their entries' outboxes (the rows go with the next change)."""
        for message in messages:
            message_id = _message_key(message)
            owner = self._entries.get(self._outbox_owner.pop(message_id, ""))
            if owner is None:
                continue
            kept = [m for m in owner.outbox if _message_key(m) != message_id]
            if len(kept) != len(owner.outbox):
                owner.outbox = kept
                self._touch(owner.key())

    def drain_tombstones(self) -> list[str]:
        """Keys of rows dropped from the table (resolved long ago) since the last call."""
        out, self._tombstones = self._tombstones, []
        return out

    def drain_latencies(self) -> list[float]:
        """Seconds from each escalation's creation to its first assignment, since the last call."""
        out, self._latencies = self._latencies, []
        return out

    # ---- inputs ------------------------------------------------------------------------

    def on_escalation(self, esc: Escalation, now: datetime) -> list[WorkspaceState]:
        """A new hand-over joins the queue; a later one of an open conversation attaches as a follow-up.

        A replayed escalation (its id already known) changes nothing.
        """
        if esc.escalation_id in self._known:
            return []
        open_id = self._open_by_conversation.get(esc.conversation_id)
        if open_id is not None:
            entry = self._entries[open_id]
            entry.follow_ups = [*entry.follow_ups, _without_known_turns(esc, entry)][-MAX_FOLLOW_UPS:]
            self._known[esc.escalation_id] = open_id
            self._touch(entry.key())
            self._customer_choice(entry, esc, now)
            return self._rows()
        # the task's intent when the agent prepared actions (its last message may be just "94107")
        skill = (esc.task_intent or (esc.nlu.intent if esc.nlu is not None else "unknown")).lower()
        category = self.categories.get(skill, "")
        entry = QueueEntry(
            escalation_id=esc.escalation_id,
            conversation_id=esc.conversation_id,
            customer_id=esc.customer_id,
            channel=esc.channel,
            recipient=esc.recipient,
            queue=self.options.queue_by_skill.get(skill) or self.options.queue_by_skill.get(category) or "general",
            skill=skill,
            language=primary_language(esc.language or (esc.profile.language if esc.profile else "en")),
            vip_tier=esc.profile.vip_tier if esc.profile is not None else "standard",
            severity=esc.priority,
            escalation=esc,
            enqueued_at=now,
            waiting_since=now,
        )
        entry.priority_score = self.rule.score(entry, now)
        self._entries[entry.escalation_id] = entry
        self._known[entry.escalation_id] = entry.escalation_id
        self._open_by_conversation[entry.conversation_id] = entry.escalation_id
        self._queue(entry)
        self._touch(entry.key())
        self._dispatch(now)
        if entry.status == "waiting":
            self._queued_notice(entry, now)
        return self._rows()

    def on_command(self, cmd: RouterCommand, now: datetime) -> list[WorkspaceState]:
        """Apply an agent's or the workspace's command once; a replayed command id changes nothing.

        A command the rules refuse (an agent resolving someone else's conversation, a transfer to an
        agent who is not online or is full) changes nothing but is remembered as seen, so its replay
        is refused too; `outcome(command_id)` says why.
        """
        if cmd.kind == "presence":
            state = self._agents.get(cmd.agent_id)
            if state is None or cmd.agent_id not in self.specs:
                self._outcome(cmd, "rejected: unknown agent")
                return []
            if cmd.command_id in state.applied_commands:
                self._outcome(cmd, "replayed")
                return []
            state.applied_commands = [*state.applied_commands, cmd.command_id][-MAX_AGENT_COMMANDS:]
            self._touch(state.key())
            assert cmd.presence is not None
            if cmd.presence != state.presence:
                state.presence = cmd.presence
                state.since = now
                if cmd.presence == "offline":
                    for escalation_id in list(state.assigned):
                        self._hand_back(self._entries[escalation_id], now, "offline")
            self._outcome(cmd, "applied")
            self._dispatch(now)
            return self._rows()

        entry = self._entries.get(cmd.escalation_id or "")
        if entry is None:
            self._outcome(cmd, "rejected: unknown escalation")
            return []
        if cmd.command_id in entry.applied_commands:
            self._outcome(cmd, "replayed")
            return []
        entry.applied_commands.append(cmd.command_id)
        self._touch(entry.key())
        refused = self._refusal(cmd, entry)
        if refused:
            self._outcome(cmd, f"rejected: {refused}")
            return self._rows()
        if cmd.kind == "resolve":
            self._resolve(entry, cmd, now)
        elif cmd.kind == "transfer":
            self._transfer(entry, cmd, now)
        elif cmd.kind == "human_replied" and entry.first_human_reply_at is None:
            entry.first_human_reply_at = now
        elif cmd.kind == "decided":
            entry.decision = cmd.decision
        self._outcome(cmd, "applied")
        self._dispatch(now)
        return self._rows()

    def tick(self, now: datetime) -> list[WorkspaceState]:
        """Once a second or so: fix what a crash left, assign, refresh scores, tell long waiters, prune."""
        for entry in [e for e in self._entries.values() if e.status == "assigned"]:
            holder = self._agents.get(entry.agent_id or "")
            if entry.agent_id not in self.specs or holder is None or holder.presence == "offline":
                self._hand_back(entry, now, "offline")
        self._dispatch(now)
        timeout = timedelta(seconds=self.options.human_wait_timeout_s)
        for _, eid in self._waiting:
            entry = self._entries[eid]
            score = self.rule.score(entry, now)
            step = self.rule.publish_step
            if step is not None and abs(score - entry.priority_score) >= step:
                self._touch(entry.key())
            entry.priority_score = score
            if now - (entry.waiting_since or entry.enqueued_at) >= timeout:
                self._no_human_notice(entry, now)
        horizon = now - timedelta(seconds=self.options.resolved_retention_s)
        while self._resolved and self._resolved[0][0] < horizon:
            _, eid = self._resolved.popleft()
            entry = self._entries.pop(eid, None)
            if entry is None:
                continue
            self._known.pop(eid, None)
            for follow_up in entry.follow_ups:
                self._known.pop(follow_up.escalation_id, None)
            self._changed.pop(entry.key(), None)
            self._tombstones.append(entry.key())
        return self._rows()

    # ---- rules -------------------------------------------------------------------------

    def _refusal(self, cmd: RouterCommand, entry: QueueEntry) -> str | None:
        actor = self.specs.get(cmd.agent_id)
        if actor is None:
            return "unknown agent"
        if entry.status == "resolved":
            return "already resolved"
        own = entry.agent_id == cmd.agent_id
        if not own and actor.role != "supervisor":
            return "held by another agent" if entry.agent_id else "not assigned to this agent"
        if cmd.kind == "transfer" and cmd.to_agent is not None:
            target = self.specs.get(cmd.to_agent)
            state = self._agents.get(cmd.to_agent)
            if target is None or state is None:
                return "unknown target agent"
            if cmd.to_agent == entry.agent_id:
                return "already with that agent"
            if state.presence != "online":
                return f"target agent is {state.presence}"
            if len(state.assigned) >= target.capacity:
                return "target agent is at capacity"
        return None

    def _resolve(self, entry: QueueEntry, cmd: RouterCommand, now: datetime) -> None:
        if entry.agent_id is not None:
            self._release(entry)
        else:
            self._unqueue(entry)
        entry.status = "resolved"
        entry.resolved_at = now
        entry.resolution_code = cmd.resolution_code
        if entry.assigned_at is not None:
            self._handle_times.append((now - entry.assigned_at).total_seconds())
        self._open_by_conversation.pop(entry.conversation_id, None)
        self._resolved.append((now, entry.escalation_id))
        self._record_message(
            entry,
            Message(
                message_id=handback_message_id(entry.escalation_id),
                conversation_id=entry.conversation_id,
                customer_id=entry.customer_id,
                channel=entry.channel,
                sender=entry.recipient,
                text="",
                content_type="empty",
                received_at=now,
                normalized_at=now,
                control="handback",
            ),
        )

    def _transfer(self, entry: QueueEntry, cmd: RouterCommand, now: datetime) -> None:
        previous = entry.agent_id
        if previous is not None:
            self._release(entry)
        else:
            self._unqueue(entry)
        entry.transfers.append(
            {"from": previous, "to": cmd.to_agent, "to_queue": cmd.to_queue, "warm": cmd.warm,
             "at": now.isoformat(), "by": cmd.agent_id, "reason": "transfer"}
        )  # fmt: skip
        if cmd.to_agent is not None:
            self._assign(entry, cmd.to_agent, now, warm_from=previous if cmd.warm else None)
        else:
            entry.queue = cmd.to_queue or entry.queue
            self._requeue(entry, now)

    def _hand_back(self, entry: QueueEntry, now: datetime, reason: str) -> None:
        previous = entry.agent_id
        self._release(entry)
        entry.transfers.append(
            {"from": previous, "to": None, "to_queue": entry.queue, "warm": False, "at": now.isoformat(),
             "by": None, "reason": reason}
        )  # fmt: skip
        self._requeue(entry, now)
        self._notice(
            entry,
            f"handed_back-{entry.assignments}",
            "The person helping you had to step away. You keep your place in line, and the next available "
            "member of our team will pick up your conversation where it stopped.",
            now,
        )

    def _requeue(self, entry: QueueEntry, now: datetime) -> None:
        entry.status = "waiting"
        entry.agent_id = None
        entry.assigned_at = None
        entry.waiting_since = now
        entry.priority_score = self.rule.score(entry, now)
        self._queue(entry)
        self._touch(entry.key())

    def _release(self, entry: QueueEntry) -> None:
        """Take the entry from the agent holding it."""
        holder = self._agents.get(entry.agent_id or "")
        if holder is not None and entry.escalation_id in holder.assigned:
            holder.assigned.remove(entry.escalation_id)
            self._touch(holder.key())
        entry.agent_id = None

    def _assign(self, entry: QueueEntry, agent_id: str, now: datetime, warm_from: str | None = None) -> None:
        self._unqueue(entry)
        agent = self._agents[agent_id]
        agent.assigned.append(entry.escalation_id)
        entry.status = "assigned"
        entry.agent_id = agent_id
        entry.assigned_at = now
        entry.assignments += 1
        self._touch(entry.key())
        self._touch(agent.key())
        if entry.assignments == 1:
            self._latencies.append(max(0.0, (now - entry.escalation.created_at).total_seconds()))
        name = self.specs[agent_id].name
        if warm_from is not None:
            before = self.specs[warm_from].name if warm_from in self.specs else "your previous agent"
            text = f"{name} is joining the conversation. {before} has shared your case, so you need not repeat it."
        else:
            text = f"{name} from our team is now looking after your conversation."
        self._notice(entry, f"assigned-{entry.assignments}", text, now)

    def _dispatch(self, now: datetime) -> None:
        """Give waiting entries, best first, to the least loaded matching agent with room."""
        free = {
            a: s
            for a, s in self._agents.items()
            if s.presence == "online" and a in self.specs and len(s.assigned) < self.specs[a].capacity
        }
        if not free or not self._waiting:
            return
        no_room: set[tuple[str, str, str]] = set()  # free only shrinks here: a kind with no room stays so
        for _, eid in list(self._waiting):
            entry = self._entries[eid]
            kind = (entry.skill, entry.language, entry.queue)
            if kind in no_room:
                continue
            candidates = [a for a in self._eligible(entry) if a in free]
            if not candidates:
                no_room.add(kind)
                continue
            best = min(
                candidates,
                key=lambda a: (len(free[a].assigned) / self.specs[a].capacity, len(free[a].assigned), a),
            )
            self._assign(entry, best, now)
            if len(free[best].assigned) >= self.specs[best].capacity:
                del free[best]
                if not free:
                    return

    def _eligible(self, entry: QueueEntry) -> frozenset[str]:
        """The configured agents who could take this entry, whatever their presence (cached)."""
        key = (entry.skill, entry.language, entry.queue)
        cached = self._match_cache.get(key)
        if cached is None:
            cached = frozenset(a for a, spec in self.specs.items() if self._matches(spec, entry))
            self._match_cache[key] = cached
        return cached

    def _matches(self, spec: AgentSpec, entry: QueueEntry) -> bool:
        skills = {s.lower() for s in spec.skills}
        category = self.categories.get(entry.skill)
        has_skill = "*" in skills or entry.skill in skills or (category is not None and category in skills)
        languages = {primary_language(x) if x != "*" else "*" for x in spec.languages}
        speaks = "*" in languages or primary_language(entry.language) in languages
        return has_skill and speaks and self._in_queues(spec, entry)

    @staticmethod
    def _in_queues(spec: AgentSpec, entry: QueueEntry) -> bool:
        return "*" in spec.queues or entry.queue in spec.queues

    def _queue(self, entry: QueueEntry) -> None:
        item = (self.rule.order_key(entry), entry.escalation_id)
        index = bisect.bisect_left(self._waiting, item)
        if index < len(self._waiting) and self._waiting[index] == item:
            return
        self._waiting.insert(index, item)

    def _unqueue(self, entry: QueueEntry) -> None:
        item = (self.rule.order_key(entry), entry.escalation_id)
        index = bisect.bisect_left(self._waiting, item)
        if index < len(self._waiting) and self._waiting[index] == item:
            del self._waiting[index]

    # ---- customer notices --------------------------------------------------------------

    def _queued_notice(self, entry: QueueEntry, now: datetime) -> None:
        wait = self.expected_wait_s(entry.escalation_id)
        position = self.position(entry.escalation_id) or 1
        if wait is None:
            text = (
                f"I've passed your conversation to our team; you are number {position} in line. Nobody who can "
                "help with this is available right now, so I can't promise a time yet; I'll tell you if it takes long."
            )
        else:
            minutes = max(1, math.ceil(wait / 60))
            text = (
                f"I've passed your conversation to our team; you are number {position} in line and the expected "
                f"wait is about {minutes} minute{'s' if minutes != 1 else ''}. You can keep writing here meanwhile."
            )
        if entry.escalation.reason == "knowledge_gap":  # the customer hears why no answer came, not a guess
            text = KNOWLEDGE_GAP_LEAD + text
        self._notice(entry, "queued", text, now)

    def _no_human_notice(self, entry: QueueEntry, now: datetime) -> None:
        waited = max(1, round((now - (entry.waiting_since or entry.enqueued_at)).total_seconds() / 60))
        self._notice(
            entry,
            f"no_human-{entry.assignments}",
            f"I'm sorry: nobody from our team has been free for the last {waited} minute{'s' if waited != 1 else ''}, "
            "and I'd rather tell you than keep you guessing. You can reply WAIT to keep your place in line, "
            "CALLBACK to have us call you back, or EMAIL to get the answer by email.",
            now,
        )

    def _customer_choice(self, entry: QueueEntry, esc: Escalation, now: datetime) -> None:
        offered = any(n.startswith("no_human-") for n in entry.notices)
        choice = _choice_in(esc.text) if offered and entry.status == "waiting" else None
        if choice is None or choice == entry.customer_choice:
            return
        entry.customer_choice = choice  # type: ignore[assignment]
        texts = {
            "wait": "Thank you for waiting; you keep your place in line.",
            "callback": "We'll call you back as soon as someone from our team is free, at the number on your account.",
            "email": "We'll answer you by email as soon as someone from our team is free.",
        }
        self._notice(entry, f"choice-{choice}", texts[choice], now, in_reply_to=esc.message_id)

    def _notice(self, entry: QueueEntry, kind: str, text: str, now: datetime, in_reply_to: str | None = None) -> None:
        """A message to the customer, at most once per entry and kind (its reply id says so too)."""
        if kind in entry.notices:
            return
        entry.notices.append(kind)
        self._record_message(
            entry,
            outbound_reply(  # shaped for the channel like every other reply
                self.shaper,
                reply_id=notice_reply_id(entry.escalation_id, kind),
                in_reply_to=in_reply_to or entry.escalation.message_id,
                conversation_id=entry.conversation_id,
                customer_id=entry.customer_id,
                channel=entry.channel,
                recipient=entry.recipient,
                recipient_verified=entry.escalation.recipient_verified,
                text=text,
                created_at=now,
            ),
        )

    def _record_message(self, entry: QueueEntry, message: Message | OutboundMessage) -> None:
        entry.outbox.append(message)
        self._touch(entry.key())
        self._queue_message(entry, message)

    def _queue_message(self, entry: QueueEntry, message: Message | OutboundMessage) -> None:
        self._outbox.append(message)
        self._outbox_owner[_message_key(message)] = entry.escalation_id

    # ---- output ------------------------------------------------------------------------

    def _touch(self, key: str) -> None:
        self._changed[key] = None

    def _outcome(self, cmd: RouterCommand, outcome: str) -> None:
        self._outcomes[cmd.command_id] = outcome
        while len(self._outcomes) > 10_000:
            self._outcomes.popitem(last=False)

    def _rows(self) -> list[WorkspaceState]:
        """The changed rows: entries first, then agents who gave something up, then the others.

        In that order a reader of the topic never sees one escalation held by two agents.
        """
        keys, self._changed = list(self._changed), OrderedDict()
        entries = [k for k in keys if k.startswith("entry:")]
        agents = [k for k in keys if k.startswith("agent:")]
        losing = []
        gaining = []
        for key in agents:
            agent_id = key.removeprefix("agent:")
            current = self._agents[agent_id].assigned
            lost = set(self._published_assigned.get(agent_id, [])) - set(current)
            (losing if lost else gaining).append(key)
            self._published_assigned[agent_id] = list(current)
        rows = []
        for key in entries:
            entry = self._entries.get(key.removeprefix("entry:"))
            if entry is not None:
                rows.append(WorkspaceState(key=key, entry=_snapshot(entry)))
        for key in [*losing, *gaining]:
            rows.append(WorkspaceState(key=key, agent=_agent_snapshot(self._agents[key.removeprefix("agent:")])))
        return rows
