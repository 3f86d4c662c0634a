"""escalate: hand the turn to a human with the context they need to pick it up."""

from __future__ import annotations

import hashlib

from operators._events import session_after_turn, turn_event
from operators.base import Operator
from operators.protocols import OperatorContext
from schemas import AuthorizedTurn, Emitted, Escalation, EventAction, GuardedTurn, RawConversationEvent, RoutedTurn

VERIFY_TOOL = "crm.verify_identity"

PRIORITY_BY_REASON = {
    "keyword_trigger": "high",
    "negative_sentiment": "high",
    "customer_requested_human": "normal",
    "policy_block": "high",
    "needs_approval": "high",
    "vip_high_severity": "urgent",
    "repeated_failure": "high",
}


class Escalate(Operator[RoutedTurn, Emitted]):
    """Package history, slots and NLU onto `sf.escalations`, and log the hand-over as a (raw) event."""

    name = "escalate"
    input_type = RoutedTurn
    output_type = Emitted
    emits = (Escalation, RawConversationEvent)

    async def run(self, record: RoutedTurn, ctx: OperatorContext) -> Emitted:
        now = ctx.clock.now()
        reason, detail = record.route.reason, record.route.detail
        prepared = []
        task_intent = None
        if isinstance(record, GuardedTurn) and record.guard.branch == "block":
            reason, detail = "policy_block", record.guard.reason
        elif isinstance(record, AuthorizedTurn) and record.authorization.branch == "block":
            detail = record.authorization.reason
            reason = "needs_approval" if detail.startswith("needs_approval") else "policy_block"
            if reason == "needs_approval":  # what a human approves with one click, keys and all
                # the identity check planned for this turn has not run: the approval runs it first
                steps = [*record.plan.steps, *record.plan.pending_steps]
                prepared = [s for s in steps if s.writes or s.name == VERIFY_TOOL]
                task_intent = record.plan.intent
        message = record.message
        session = session_after_turn(record, "agent", f"[handed to a human: {reason}]", now)
        session.escalated = True
        session.task = None  # the human takes it from here
        escalation = Escalation(
            escalation_id="x-" + hashlib.sha256(f"escalation:{message.message_id}".encode()).hexdigest()[:24],
            message_id=message.message_id,
            conversation_id=message.conversation_id,
            customer_id=message.customer_id,
            session_id=record.session.session_id,
            channel=message.channel,
            recipient=message.sender,
            text=message.text,
            reason=reason,
            detail=detail,
            priority=_priority(reason, record),
            nlu=record.nlu,
            sentiment_trend=list(record.session.sentiment_trend),
            language=record.profile.language if record.profile is not None else "en",
            history=record.session.history,
            profile=record.profile,
            slots={**record.session.slots, **(record.session.task.slots if record.session.task else {})},
            recommended_actions=[f"answer intent {record.nlu.intent}"] if record.nlu.intent != "out_of_scope" else [],
            prepared_actions=prepared,
            task_intent=task_intent,
            created_at=now,
        )
        event = turn_event(
            record, "escalated", now, action=EventAction(type="escalation", name=reason, status="queued", result={})
        )
        ctx.table("sessions").set(message.customer_id, session)
        return Emitted(records=[escalation, event])


def _priority(reason: str, record: RoutedTurn) -> str:
    """The reason's priority, one step higher for gold and platinum customers."""
    priority = PRIORITY_BY_REASON.get(reason, "normal")
    if record.profile is not None and record.profile.vip_tier in ("gold", "platinum"):
        priority = {"low": "normal", "normal": "high"}.get(priority, priority)
    return priority
