"""escalate: hand the turn to a human with the context they need to pick it up."""

from __future__ import annotations

import hashlib

from operators._events import session_after_turn, turn_event
from operators.base import Operator
from operators.format import reply_target
from operators.protocols import OperatorContext
from schemas import (
    VERIFY_TOOL,
    Emitted,
    Escalation,
    EventAction,
    PlannedTurn,
    RawConversationEvent,
    RoutedTurn,
)

PRIORITY_BY_REASON = {
    "keyword_trigger": "high",
    "negative_sentiment": "high",
    "customer_requested_human": "normal",
    "policy_block": "high",
    "needs_approval": "high",
    "vip_high_severity": "urgent",
    "repeated_failure": "high",
    "identity_locked": "high",  # someone may be guessing their way into the account
}


PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}


class Escalate(Operator[RoutedTurn, Emitted]):
    """Package history, slots and NLU onto `sf.escalations`, and log the hand-over as a (raw) event.

    A message that arrives while a human has the conversation (`with_human`) becomes a follow-up:
    an Escalation the workspace router attaches to the open entry. It is not a new hand-over, so
    the session's history gets no second "[handed to a human]" line, the hand-over's start and
    first escalation stay as they were, and its priority is the open one's, raised (never
    lowered) when the message would have gone to a human on its own (e.g. a legal threat).
    """

    name = "escalate"
    input_type = RoutedTurn
    output_type = Emitted
    emits = (Escalation, RawConversationEvent)

    async def run(self, record: RoutedTurn, ctx: OperatorContext) -> Emitted:
        now = ctx.clock.now()
        reason, detail, plan = record.hand_over()
        prepared = []
        task_intent = None
        if plan is not None:  # what a human approves with one click, keys and all
            # the identity check planned for this turn has not run: the approval runs it first
            steps = [*plan.steps, *plan.pending_steps]
            prepared = [s for s in steps if s.writes or s.name == VERIFY_TOOL]
            task_intent = plan.intent
        message = record.message
        escalation_id = escalation_id_for(message.message_id)
        follow_up = reason == "with_human" and record.session.escalated
        if follow_up:
            own = _priority(record.route.underlying_reason or reason, record)
            held = record.session.escalation_priority or "normal"
            priority = max(own, held, key=PRIORITY_RANK.__getitem__)
            session = record.session.model_copy()
            session.last_intent = record.nlu.intent
            session.escalation_priority = priority  # type: ignore[assignment]
        else:
            priority = _priority(reason, record)
            session = session_after_turn(record, "agent", f"[handed to a human: {reason}]", now)
            session.escalated = True
            session.escalated_at = now
            session.escalation_id = escalation_id
            session.escalation_priority = priority  # type: ignore[assignment]
        session.task = None  # the human takes it from here
        recipient, verified = reply_target(message, record.profile)
        # what the knowledge base found for a question it could not answer well enough: the human's head start
        knowledge = record.plan.knowledge if isinstance(record, PlannedTurn) else None
        passages = knowledge.passages if knowledge is not None and not knowledge.answered else []
        escalation = Escalation(
            escalation_id=escalation_id,
            message_id=message.message_id,
            conversation_id=message.conversation_id,
            customer_id=message.customer_id,
            session_id=record.session.session_id,
            channel=message.channel,
            recipient=recipient,
            recipient_verified=verified,
            text=message.text,
            reason=reason,
            detail=detail,
            priority=priority,  # type: ignore[arg-type]
            nlu=record.nlu,
            sentiment_trend=list(record.session.sentiment_trend),
            language=record.profile.language if record.profile is not None else "en",
            history=record.session.history,
            profile=record.profile,
            slots={**record.session.slots, **(record.session.task.slots if record.session.task else {})},
            recommended_actions=[f"answer intent {record.nlu.intent}"] if record.nlu.intent != "out_of_scope" else [],
            prepared_actions=prepared,
            task_intent=task_intent,
            passages=passages,
            created_at=now,
        )
        status = "follow_up" if follow_up else "queued"
        event = turn_event(
            record, "escalated", now, action=EventAction(type="escalation", name=reason, status=status, result={})
        )
        ctx.table("sessions").set(message.customer_id, session)
        return Emitted(records=[escalation, event])


def escalation_id_for(message_id: str) -> str:
    """Derived from the message id: a replayed turn (or follow-up) is the same escalation."""
    return "x-" + hashlib.sha256(f"escalation:{message_id}".encode()).hexdigest()[:24]


def _priority(reason: str, record: RoutedTurn) -> str:
    """The reason's priority, one step higher for gold and platinum customers."""
    priority = PRIORITY_BY_REASON.get(reason, "normal")
    if record.profile is not None and record.profile.vip_tier in ("gold", "platinum"):
        priority = {"low": "normal", "normal": "high"}.get(priority, priority)
    return priority
