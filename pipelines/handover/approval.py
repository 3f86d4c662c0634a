"""Approving a prepared action: the agent's own authorize → execute → guard, run for a human's yes.

When the action policy sends a write to a human (`needs_approval`), the escalation carries the
prepared steps, keys and all. A supervisor's approval runs them through the very operators the
topology runs, configured as topology.yaml configures them, on a turn rebuilt from the
escalation: the same policy (with the one difference the approval is for: `needs_approval` is
what a human's yes answers), the same tool calls with the same idempotency keys, the same reply
templates and the same reply guard. Nothing here re-implements them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from operators.authorize import Authorize
from operators.execute import Execute
from operators.guard import Guard
from operators.playbooks import Playbook
from operators.policy import APPROVAL_ARGUMENT
from operators.protocols import Clock, DictTable, OperatorContext, ToolSource
from schemas import (
    VERIFY_TOOL,
    ActionCall,
    ActionResult,
    AuthorizedTurn,
    Escalation,
    GuardVerdict,
    HistoryTurn,
    Message,
    NluResult,
    Plan,
    PlannedTurn,
    QueueEntry,
    RouteDecision,
    SessionContext,
    utcnow,
)
from schemas.nlu import Sentiment

__all__ = ["APPROVED_WITHOUT_TEMPLATE", "ApprovalOutcome", "ApprovalRefused", "ApprovalRunner"]

APPROVED_WITHOUT_TEMPLATE = "That's done: a colleague approved it."
FAILURE_OUTCOMES = ("failed", "unverified", "not_found", "not_allowed", "invalid", "needs_approval")


class ApprovalRefused(Exception):
    """The action policy refuses the prepared actions for a reason a human's approval does not lift."""


@dataclass(frozen=True)
class ApprovalOutcome:
    """What running the prepared actions came to: the outcome, each step's result, the reply to send.

    `blocked` is the reply guard's reason when it refused the reply as written (`reply` is None then).
    """

    outcome: str
    ran: list[ActionCall]
    results: list[ActionResult]
    reply: str | None
    blocked: str | None = None


@dataclass
class _Clock:
    at: datetime = field(default_factory=utcnow)

    def now(self) -> datetime:
        return self.at


class ApprovalRunner:
    """Runs a human-approved plan through the topology's authorize, execute and guard operators."""

    def __init__(
        self,
        authorize: Authorize,
        execute: Execute,
        guard: Guard,
        playbooks: dict[str, Playbook],
        tools: ToolSource | None,
        clock: Clock | None = None,
    ) -> None:
        self.authorize = authorize
        self.execute = execute
        self.guard = guard
        self.playbooks = playbooks
        self.tools = tools
        self.clock = clock

    def intents(self) -> list[str]:
        """The intents the action policy knows (the workspace offers them for intent corrections)."""
        return sorted(self.authorize.policy.intents)

    async def run(self, entry: QueueEntry, prepared: list[ActionCall], intent: str) -> ApprovalOutcome:
        # the identity check the agent prepared runs first, then the writes, in their order
        ran = [step for step in prepared if step.name == VERIFY_TOOL] + [s for s in prepared if s.name != VERIFY_TOOL]
        planned = self._turn(entry, ran, intent)
        verdict = self.authorize.verdict(planned)
        if verdict.branch == "block" and verdict.kind != "needs_approval":
            raise ApprovalRefused(verdict.reason)
        # the backend refuses a refund above its automatic limit unless it names who approved it
        refund_tools = set(self.authorize.policy.refund_tools)
        approver = f"workspace:{entry.agent_id or 'supervisor'}"
        steps = [
            s.model_copy(update={"arguments": {**s.arguments, APPROVAL_ARGUMENT: approver}})
            if s.name in refund_tools
            else s
            for s in ran
        ]
        planned = planned.model_copy(update={"plan": planned.plan.model_copy(update={"steps": steps})})
        ctx = OperatorContext(tables={"sessions": DictTable()}, clock=self.clock or _Clock(), tools=self.tools)
        authorized = AuthorizedTurn(**dict(planned), authorization=GuardVerdict(branch="pass"))
        executed = await self.execute.run(authorized, ctx)
        outcome = _outcome(executed.results)
        guarded = self.guard.verdict(executed)
        if guarded.branch == "block":
            return ApprovalOutcome(outcome, ran, executed.results, None, guarded.reason)
        return ApprovalOutcome(outcome, ran, executed.results, executed.reply.text)

    def _turn(self, entry: QueueEntry, steps: list[ActionCall], intent: str) -> PlannedTurn:
        """The turn the agent would have run had it been allowed to: rebuilt from the escalation."""
        esc = entry.escalation
        escalations = [esc, *entry.follow_ups]
        latest = escalations[-1]
        history = [turn for e in escalations for turn in e.history]
        # what the customer said in the escalated messages before the latest counts as their own words
        history += [_said(e) for e in escalations[:-1]]
        now = (self.clock or _Clock()).now()
        message = Message(
            message_id=latest.message_id,
            conversation_id=entry.conversation_id,
            customer_id=entry.customer_id,
            channel=latest.channel,
            sender=latest.recipient,
            address_verified=latest.recipient_verified,
            text=latest.text,
            received_at=latest.created_at,
        )
        session = SessionContext(
            customer_id=entry.customer_id,
            conversation_id=entry.conversation_id,
            session_id=esc.session_id,
            started_at=esc.created_at,
            last_activity_at=now,
            slots=dict(esc.slots),
            # the agent verified the customer before it escalated, or prepared the check to run first
            verified=True,
            history=history,
        )
        playbook = self.playbooks.get(intent)
        plan = Plan(
            planner="human-approval",
            intent=intent,
            steps=steps,
            reply_template=playbook.reply_for("succeeded") if playbook else APPROVED_WITHOUT_TEMPLATE,
            reply_variables=dict(esc.slots),
            replies={o: playbook.reply_for(o) for o in FAILURE_OUTCOMES} if playbook else {},
        )
        nlu = esc.nlu or NluResult(
            intent=intent, confidence=1.0, sentiment=Sentiment(label="neutral", score=0.0), model_used="human"
        )
        return PlannedTurn(
            message=message,
            session=session,
            profile=esc.profile,
            nlu=nlu,
            route=RouteDecision(branch="auto", reason="confident", detail="approved by a human"),
            plan=plan,
        )


def _said(escalation: Escalation) -> HistoryTurn:
    return HistoryTurn(
        role="customer", text=escalation.text, at=escalation.created_at, message_id=escalation.message_id
    )


def _outcome(results: list[ActionResult]) -> str:
    """As `execute` counts it: the first failed step's kind, `failed` when the backend could not serve."""
    for result in results:
        if result.status != "succeeded":
            return "failed" if result.error_kind in (None, "unavailable") else result.error_kind or "failed"
    return "succeeded"
