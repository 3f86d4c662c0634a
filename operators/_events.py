"""Shared by `emit` and `escalate`: the analytics event of a turn, built one way.

The event carries the raw text (`RawConversationEvent`, topic `sf.events.raw`); the `analytics`
stage redacts it before it reaches `sf.events`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from schemas import (
    EventAction,
    EventEntity,
    EventKnowledge,
    EventMessage,
    EventMetadata,
    EventNlu,
    EventResponse,
    EventSentiment,
    HistoryTurn,
    KnowledgeUse,
    NluTurn,
    RawConversationEvent,
    SessionContext,
)

HISTORY_KEPT = 20


def event_id_for(message_id: str, event_type: str) -> str:
    return "e-" + hashlib.sha256(f"{event_type}:{message_id}".encode()).hexdigest()[:24]


def turn_event(
    turn: NluTurn,
    event_type: str,
    now: datetime,
    action: EventAction | None = None,
    response: EventResponse | None = None,
) -> RawConversationEvent:
    message, nlu = turn.message, turn.nlu
    return RawConversationEvent(
        event_id=event_id_for(message.message_id, event_type),
        event_type=event_type,  # type: ignore[arg-type]
        timestamp=now,
        conversation_id=message.conversation_id,
        session_id=turn.session.session_id,
        customer_id=message.customer_id,
        channel=message.channel,
        message=EventMessage(id=message.message_id, content=message.text, type=message.content_type),
        nlu=EventNlu(
            intent=nlu.intent,
            confidence=nlu.confidence,
            entities=[EventEntity(type=e.type, value=e.value, confidence=e.confidence) for e in nlu.entities],
            sentiment=EventSentiment(label=nlu.sentiment.label, score=nlu.sentiment.score),
        ),
        action=action,
        response=response,
        metadata=_metadata(turn, max(0.0, (now - message.received_at).total_seconds() * 1000.0)),
        knowledge=_knowledge(turn, event_type),
    )


def _knowledge(turn: NluTurn, event_type: str) -> EventKnowledge | None:
    """What the knowledge base said about the turn, if `retrieve` looked it up (plan.knowledge)."""
    plan = getattr(turn, "plan", None)
    used: KnowledgeUse | None = getattr(plan, "knowledge", None)
    if used is None:
        return None
    # a hand-over sends no reply: nothing was cited to the customer, even if guard blocked a cited answer
    cited = list(dict.fromkeys(used.cited)) if event_type == "turn_processed" else []
    best = next((p for p in used.passages if p.doc_id in cited), used.passages[0] if used.passages else None)
    return EventKnowledge(
        confidence=used.confidence,
        threshold=used.threshold,
        answered=used.answered,
        cited=cited,
        found=list(dict.fromkeys(p.doc_id for p in used.passages)),
        domain=best.domain if best is not None else "",
    )


def _metadata(turn: NluTurn, latency_ms: float) -> EventMetadata:
    """The turn's models and spend: the NLU model, and the language model(s) of its plan and reply, if any."""
    plan, reply = getattr(turn, "plan", None), getattr(turn, "reply", None)
    uses = [u for u in (getattr(plan, "llm", None), getattr(reply, "llm", None)) if u is not None]
    last = uses[-1] if uses else None
    return EventMetadata(
        latency_ms=latency_ms,
        model_used=turn.nlu.model_used,
        cost_usd=sum(u.cost_usd for u in uses),
        llm_tier="+".join(dict.fromkeys(u.tier for u in uses)),
        llm_model=last.model if last else "",
        llm_tokens_in=sum(u.tokens_in for u in uses),
        llm_tokens_out=sum(u.tokens_out for u in uses),
    )


def session_after_turn(turn: NluTurn, role: str, text: str, now: datetime) -> SessionContext:
    """The session as it stands once the turn is answered or handed over."""
    session = turn.session.model_copy()  # shallow: the lists it changes are replaced, not mutated
    session.last_intent = turn.nlu.intent
    session.history = [
        *session.history,
        HistoryTurn(role=role, text=text, at=now, message_id=turn.message.message_id),  # type: ignore[arg-type]
    ][-HISTORY_KEPT:]
    return session
