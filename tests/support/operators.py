"""Builders for operator unit tests: records and a context over plain dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from operators.protocols import DictTable, OperatorContext
from pipelines.runtime.clients import RuntimeClients
from schemas import (
    ContextTurn,
    Message,
    NluResult,
    NluTurn,
    RawInbound,
    RouteDecision,
    RoutedTurn,
    Sentiment,
    SessionContext,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class FixedClock:
    def __init__(self, now: datetime = T0) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def context(clock: FixedClock | None = None) -> OperatorContext:
    tables = {"sessions": DictTable(), "identities": DictTable(), "seen": DictTable()}
    return OperatorContext(tables=tables, clock=clock or FixedClock(), clients=RuntimeClients())


def raw(text: str = "where is my order 1234567?", **fields: object) -> RawInbound:
    """A record as a channel that verified its sender publishes it (pass address_verified=False for a claim)."""
    base: dict[str, object] = {
        "message_id": "m-1", "channel": "webchat", "sender": "web-1", "text": text, "address_verified": True,
    }  # fmt: skip
    base.update(fields)
    return RawInbound.model_validate(base)


def message(text: str = "where is my order 1234567?", message_id: str = "m-1", channel: str = "webchat") -> Message:
    return Message(
        message_id=message_id,
        conversation_id="conv-c1",
        customer_id="c1",
        channel=channel,  # type: ignore[arg-type]
        sender="web-1",
        address_verified=True,
        text=text,
        received_at=T0,
    )


def session(**fields: object) -> SessionContext:
    base: dict[str, object] = {
        "customer_id": "c1", "conversation_id": "conv-c1", "session_id": "c1-s1",
        "started_at": T0, "last_activity_at": T0, "turn_count": 1,
    }  # fmt: skip
    base.update(fields)
    return SessionContext.model_validate(base)


def nlu_turn(
    intent: str = "track_order",
    confidence: float = 0.95,
    score: float = 0.0,
    text: str = "where is my order?",
    **s: object,
) -> NluTurn:
    label = "negative" if score <= -0.3 else "positive" if score >= 0.3 else "neutral"
    return NluTurn(
        message=message(text),
        session=session(**s),
        nlu=NluResult(
            intent=intent, confidence=confidence, sentiment=Sentiment(label=label, score=score), model_used="test"
        ),
    )


def routed_turn(**kwargs: object) -> RoutedTurn:
    turn = nlu_turn(**kwargs)  # type: ignore[arg-type]
    return RoutedTurn(**dict(turn), route=RouteDecision(branch="auto", reason="confident"))


def context_turn(text: str = "hello") -> ContextTurn:
    return ContextTurn(message=message(text), session=session())
