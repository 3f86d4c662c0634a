"""Records → the flat rows of the analytics tables, built column by column for batch inserts.

ConversationEvent → `events`; Feedback → `feedback` (without its free-text comment).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas import ConversationEvent, Feedback

COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "timestamp",
    "conversation_id",
    "session_id",
    "customer_id",
    "channel",
    "message_id",
    "message_content",
    "message_type",
    "intent",
    "intent_confidence",
    "entity_types",
    "sentiment_label",
    "sentiment_score",
    "action_type",
    "action_name",
    "action_status",
    "response_content",
    "response_confidence",
    "latency_ms",
    "model_used",
    "cost_usd",
    "llm_tier",
    "llm_model",
    "llm_tokens_in",
    "llm_tokens_out",
    "knowledge_used",
    "knowledge_confidence",
    "knowledge_threshold",
    "knowledge_answered",
    "knowledge_domain",
    "knowledge_cited",
    "inserted_at",
)


def epoch_seconds(moment: datetime) -> int:
    """Whole seconds since 1970 UTC; a naive datetime is taken as UTC (as the records' utcnow makes them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def flatten(event: ConversationEvent, inserted_at: int) -> tuple[Any, ...]:
    """One row in COLUMNS order; absent parts become '' / 0.0 / [] (the table has no Nullable)."""
    message, nlu, action, response, meta = event.message, event.nlu, event.action, event.response, event.metadata
    knowledge = event.knowledge
    return (
        event.event_id,
        event.event_type,
        epoch_seconds(event.timestamp),
        event.conversation_id,
        event.session_id,
        event.customer_id,
        event.channel,
        message.id if message else "",
        message.content if message else "",
        message.type if message else "",
        nlu.intent if nlu else "",
        nlu.confidence if nlu else 0.0,
        [entity.type for entity in nlu.entities] if nlu else [],
        nlu.sentiment.label if nlu else "",
        nlu.sentiment.score if nlu else 0.0,
        action.type if action else "",
        action.name if action else "",
        action.status if action else "",
        response.content if response else "",
        response.confidence if response else 0.0,
        meta.latency_ms,
        meta.model_used,
        meta.cost_usd,
        meta.llm_tier,
        meta.llm_model,
        meta.llm_tokens_in,
        meta.llm_tokens_out,
        1 if knowledge else 0,
        knowledge.confidence if knowledge else 0.0,
        knowledge.threshold if knowledge else 0.0,
        1 if knowledge and knowledge.answered else 0,
        knowledge.domain if knowledge else "",
        list(knowledge.cited) if knowledge else [],
        inserted_at,
    )


def to_columns(events: Sequence[ConversationEvent], inserted_at: int) -> dict[str, list[Any]]:
    """The batch as one list per column (what both columnar insert paths want)."""
    rows = [flatten(event, inserted_at) for event in events]
    if not rows:
        return {name: [] for name in COLUMNS}
    return {name: list(values) for name, values in zip(COLUMNS, zip(*rows, strict=True), strict=True)}


FEEDBACK_COLUMNS: tuple[str, ...] = (
    "feedback_id",
    "kind",
    "at",
    "conversation_id",
    "message_id",
    "escalation_id",
    "resolution_code",
    "original_intent",
    "corrected_intent",
    "rating",
    "has_comment",
    "author",
    "agent_id",
    "channel",
    "handle_time_s",
    "first_response_s",
    "inserted_at",
)
NO_DURATION = -1.0  # the table has no Nullable: an absent handle or response time is -1


def flatten_feedback(record: Feedback, inserted_at: int) -> tuple[Any, ...]:
    """One row in FEEDBACK_COLUMNS order. The comment is left out: customers write names and numbers in it."""
    return (
        record.feedback_id,
        record.kind,
        epoch_seconds(record.at),
        record.conversation_id,
        record.message_id or "",
        record.escalation_id or "",
        record.resolution_code or "",
        record.original_intent or "",
        record.corrected_intent or "",
        record.rating or 0,
        1 if record.comment.strip() else 0,
        record.author,
        record.agent_id or "",
        record.channel or "",
        NO_DURATION if record.handle_time_s is None else record.handle_time_s,
        NO_DURATION if record.first_response_s is None else record.first_response_s,
        inserted_at,
    )


def feedback_to_columns(records: Sequence[Feedback], inserted_at: int) -> dict[str, list[Any]]:
    """The feedback batch as one list per column."""
    rows = [flatten_feedback(record, inserted_at) for record in records]
    if not rows:
        return {name: [] for name in FEEDBACK_COLUMNS}
    return {name: list(values) for name, values in zip(FEEDBACK_COLUMNS, zip(*rows, strict=True), strict=True)}
