"""The conversation store: every record of the stream upserted into PostgreSQL by its id.

A batch is written in one transaction, one statement per table, each statement taking whole
columns as arrays (`INSERT ... SELECT FROM unnest(...)`), so a batch of 500 records costs a
handful of round trips. Replaying a batch changes nothing: records are inserted by their ids
(`ON CONFLICT DO NOTHING`), derived values only move one way (first seen by LEAST, latest by
GREATEST, closed once; a delivery status or a call recording only by its rank), counts are
queried rather than kept, and profiles are last-writer-wins by `updated_at`. Rows are fed in
key order so concurrent writers lock rows in the same order and do not deadlock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from connectors.postgres.migrator import migrate as apply_migrations
from schemas import (
    CallRecording,
    ContactAddress,
    ConversationEvent,
    CustomerProfile,
    DeliveryStatus,
    Escalation,
    Feedback,
    Message,
    OutboundMessage,
)

__all__ = ["PostgresStore", "intent_corrections"]

_CUSTOMERS_SEEN = """
INSERT INTO customers (customer_id, first_seen_at)
SELECT customer_id, min(at)
FROM unnest($1::text[], $2::timestamptz[]) AS t(customer_id, at)
GROUP BY customer_id ORDER BY customer_id
ON CONFLICT (customer_id) DO UPDATE
SET first_seen_at = LEAST(customers.first_seen_at, excluded.first_seen_at)
WHERE customers.first_seen_at IS NULL OR excluded.first_seen_at < customers.first_seen_at
"""

_CONVERSATIONS = """
INSERT INTO conversations (conversation_id, customer_id, started_at, last_message_at)
SELECT conversation_id, min(customer_id), min(started_at), max(last_message_at)
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
     AS t(conversation_id, customer_id, started_at, last_message_at)
GROUP BY conversation_id ORDER BY conversation_id
ON CONFLICT (conversation_id) DO UPDATE
SET started_at = LEAST(conversations.started_at, excluded.started_at),
    last_message_at = GREATEST(conversations.last_message_at, excluded.last_message_at)
WHERE (conversations.started_at, conversations.last_message_at) IS DISTINCT FROM
      (LEAST(conversations.started_at, excluded.started_at),
       GREATEST(conversations.last_message_at, excluded.last_message_at))
"""

_MESSAGES = """
INSERT INTO messages (message_id, conversation_id, customer_id, role, channel, address, text,
                      in_reply_to, content_type, subject, provider_message_id, at, channel_meta)
SELECT m.message_id, m.conversation_id, m.customer_id, m.role, m.channel, m.address, m.text, m.in_reply_to,
       m.content_type, m.subject, m.provider_message_id, m.at, m.channel_meta::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::text[])
     AS m(message_id, conversation_id, customer_id, role, channel, address, text, in_reply_to, content_type,
          subject, provider_message_id, at, channel_meta)
ORDER BY 1
ON CONFLICT (message_id) DO NOTHING
"""

_SESSIONS = """
INSERT INTO sessions (session_id, conversation_id, customer_id, started_at, last_activity_at, escalated, closed_at)
SELECT session_id, min(conversation_id), min(customer_id), min(turn_at), max(turn_at), bool_or(escalated),
       min(closed_at)
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::boolean[], $6::timestamptz[])
     AS t(session_id, conversation_id, customer_id, turn_at, escalated, closed_at)
GROUP BY session_id ORDER BY session_id
ON CONFLICT (session_id) DO UPDATE
SET started_at = LEAST(sessions.started_at, excluded.started_at),
    last_activity_at = GREATEST(sessions.last_activity_at, excluded.last_activity_at),
    escalated = sessions.escalated OR excluded.escalated,
    closed_at = LEAST(sessions.closed_at, excluded.closed_at)
WHERE (sessions.started_at, sessions.last_activity_at, sessions.escalated, sessions.closed_at) IS DISTINCT FROM
      (LEAST(sessions.started_at, excluded.started_at), GREATEST(sessions.last_activity_at, excluded.last_activity_at),
       sessions.escalated OR excluded.escalated, LEAST(sessions.closed_at, excluded.closed_at))
"""

_ESCALATIONS = """
INSERT INTO escalations (escalation_id, message_id, conversation_id, customer_id, session_id, channel, reason, detail,
                         priority, intent, confidence, slots, recommended_actions, created_at)
SELECT e.escalation_id, e.message_id, e.conversation_id, e.customer_id, e.session_id, e.channel, e.reason, e.detail,
       e.priority, e.intent, e.confidence, e.slots::jsonb, e.recommended_actions::jsonb, e.created_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::float8[], $12::text[], $13::text[], $14::timestamptz[])
     AS e(escalation_id, message_id, conversation_id, customer_id, session_id, channel, reason, detail,
          priority, intent, confidence, slots, recommended_actions, created_at)
ORDER BY 1
ON CONFLICT (escalation_id) DO NOTHING
"""

_ACTIONS = """
INSERT INTO actions (event_id, conversation_id, session_id, customer_id, type, name, status, result, at)
SELECT a.event_id, a.conversation_id, a.session_id, a.customer_id, a.type, a.name, a.status, a.result::jsonb, a.at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::timestamptz[])
     AS a(event_id, conversation_id, session_id, customer_id, type, name, status, result, at)
ORDER BY 1
ON CONFLICT (event_id) DO NOTHING
"""

_FEEDBACK = """
INSERT INTO feedback (feedback_id, conversation_id, message_id, escalation_id, kind, resolution_code, original_intent,
                      corrected_intent, rating, comment, author, agent_id, channel, handle_time_s, first_response_s, at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::smallint[], $10::text[], $11::text[], $12::text[], $13::text[], $14::float8[], $15::float8[],
                     $16::timestamptz[])
ORDER BY 1
ON CONFLICT (feedback_id) DO NOTHING
"""

_KNOWLEDGE_USES = """
INSERT INTO knowledge_uses (doc_id, event_id, use, conversation_id, session_id, customer_id, message_id, channel,
                            intent, confidence, at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::text[], $10::float8[], $11::timestamptz[])
ORDER BY 1, 2
ON CONFLICT (doc_id, event_id) DO NOTHING
"""

# An article's conversations, newest use first: per conversation its latest use (time, channel, intent,
# confidence), whether a reply cited the article and whether a hand-over carried it, and the conversation's
# latest escalation, which the workspace opens it by (a conversation the agent answered alone may have none).
_ARTICLE_CONVERSATIONS = """
SELECT u.conversation_id, u.customer_id, u.last_used_at, u.channel, u.intent, u.confidence, u.cited, u.handed_over,
       u.uses,
       (SELECT e.escalation_id FROM escalations e WHERE e.conversation_id = u.conversation_id
        ORDER BY e.created_at DESC, e.escalation_id DESC LIMIT 1) AS escalation_id
FROM (
    SELECT conversation_id, min(customer_id) AS customer_id, max(at) AS last_used_at,
           (array_agg(channel ORDER BY at DESC, event_id DESC))[1] AS channel,
           (array_agg(intent ORDER BY at DESC, event_id DESC))[1] AS intent,
           (array_agg(confidence ORDER BY at DESC, event_id DESC))[1] AS confidence,
           bool_or(use = 'cited') AS cited, bool_or(use = 'handed_over') AS handed_over, count(*) AS uses
    FROM knowledge_uses WHERE doc_id = $1
    GROUP BY conversation_id
) u
ORDER BY u.last_used_at DESC, u.conversation_id
LIMIT $2 OFFSET $3
"""

# Training rows for the intent model: each corrected message's text with its latest correction.
_INTENT_CORRECTIONS = """
SELECT DISTINCT ON (f.message_id) m.text, f.corrected_intent AS label, f.original_intent, f.message_id, f.at
FROM feedback f JOIN messages m ON m.message_id = f.message_id
WHERE f.kind = 'intent_correction' AND f.corrected_intent IS NOT NULL AND f.corrected_intent <> ''
  AND m.role = 'customer' AND m.text <> ''
  AND ($1::timestamptz IS NULL OR f.at >= $1)
ORDER BY f.message_id, f.at DESC, f.feedback_id DESC
"""

_PROFILES = """
INSERT INTO customers (customer_id, display_name, preferences, vip_tier, language, lifetime, profile_updated_at)
SELECT p.customer_id, p.display_name, p.preferences::jsonb, p.vip_tier, p.language, p.lifetime::jsonb, p.updated_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
     AS p(customer_id, display_name, preferences, vip_tier, language, lifetime, updated_at)
ORDER BY 1
ON CONFLICT (customer_id) DO UPDATE
SET display_name = excluded.display_name, preferences = excluded.preferences, vip_tier = excluded.vip_tier,
    language = excluded.language, lifetime = excluded.lifetime, profile_updated_at = excluded.profile_updated_at
WHERE customers.profile_updated_at IS NULL OR customers.profile_updated_at < excluded.profile_updated_at
RETURNING customer_id
"""

_DROP_CONTACTS = "DELETE FROM customer_contacts WHERE customer_id = ANY($1::text[])"

_CONTACTS = """
INSERT INTO customer_contacts (channel, address, customer_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ORDER BY 1, 2
ON CONFLICT (channel, address) DO UPDATE SET customer_id = excluded.customer_id
WHERE customer_contacts.customer_id <> excluded.customer_id
"""

# A status replaces the stored one only if it is further along (rank); its error code, once
# known, stays (a repeat of the same status may bring a missing one); the earliest arrival is
# kept. A replayed status changes no row.
_DELIVERY_STATUSES = """
INSERT INTO delivery_statuses AS d (message_sid, provider, status, rank, error_code, recipient, first_at, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int4[], $6::text[], $7::timestamptz[],
                     $8::timestamptz[])
ORDER BY 1
ON CONFLICT (message_sid) DO UPDATE
SET status = CASE WHEN excluded.rank > d.rank THEN excluded.status ELSE d.status END,
    rank = GREATEST(d.rank, excluded.rank),
    error_code = CASE WHEN excluded.rank > d.rank THEN COALESCE(excluded.error_code, d.error_code)
                      WHEN excluded.status = d.status THEN COALESCE(d.error_code, excluded.error_code)
                      ELSE d.error_code END,
    recipient = COALESCE(d.recipient, excluded.recipient),
    first_at = LEAST(d.first_at, excluded.first_at),
    updated_at = CASE WHEN excluded.rank > d.rank THEN excluded.updated_at ELSE d.updated_at END
WHERE excluded.rank > d.rank
   OR (excluded.status = d.status AND d.error_code IS NULL AND excluded.error_code IS NOT NULL)
   OR (d.recipient IS NULL AND excluded.recipient IS NOT NULL)
   OR excluded.first_at < d.first_at
"""

_CALL_RECORDINGS = """
INSERT INTO call_recordings (recording_sid, call_sid, provider, recording_url, status, rank, duration_s, received_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[], $7::int4[],
                     $8::timestamptz[])
ORDER BY 1
ON CONFLICT (recording_sid) DO UPDATE
SET recording_url = excluded.recording_url, status = excluded.status, rank = excluded.rank,
    duration_s = COALESCE(excluded.duration_s, call_recordings.duration_s), received_at = excluded.received_at
WHERE excluded.rank > call_recordings.rank
"""

_SNAPSHOT = """
SELECT jsonb_build_object(
    'conversation', to_jsonb(c) || jsonb_build_object(
        'message_count', (SELECT count(*) FROM messages m WHERE m.conversation_id = c.conversation_id)),
    'messages', COALESCE((SELECT jsonb_agg(to_jsonb(m) ORDER BY m.at, m.role <> 'customer', m.message_id)
                          FROM messages m WHERE m.conversation_id = c.conversation_id), '[]'::jsonb),
    'escalations', COALESCE((SELECT jsonb_agg(to_jsonb(e) ORDER BY e.created_at, e.escalation_id)
                             FROM escalations e WHERE e.conversation_id = c.conversation_id), '[]'::jsonb),
    'sessions', COALESCE((SELECT jsonb_agg(to_jsonb(s) ORDER BY s.started_at NULLS LAST, s.session_id)
                          FROM sessions s WHERE s.conversation_id = c.conversation_id), '[]'::jsonb),
    'actions', COALESCE((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.at, a.event_id)
                         FROM actions a WHERE a.conversation_id = c.conversation_id), '[]'::jsonb),
    'recordings', COALESCE((SELECT jsonb_agg(to_jsonb(r) ORDER BY r.received_at, r.recording_sid)
                            FROM call_recordings r
                            WHERE r.call_sid IN (SELECT m.channel_meta ->> 'call_sid' FROM messages m
                                                 WHERE m.conversation_id = c.conversation_id
                                                   AND m.channel_meta ? 'call_sid')), '[]'::jsonb)
)::text
FROM conversations c WHERE c.conversation_id = $1
"""


def _utc(at: datetime) -> datetime:
    """Naive timestamps are taken as UTC, as everywhere else in supportflow."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to the column arrays `unnest` takes."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


@dataclass
class _Batch:
    """One write's rows, table by table, gathered before any statement runs."""

    customers: list[tuple[str, datetime]] = field(default_factory=list)
    conversations: list[tuple[str, str, datetime, datetime | None]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    escalations: list[tuple[Any, ...]] = field(default_factory=list)
    actions: list[tuple[Any, ...]] = field(default_factory=list)
    feedback: list[tuple[Any, ...]] = field(default_factory=list)
    knowledge_uses: list[tuple[Any, ...]] = field(default_factory=list)
    profiles: dict[str, CustomerProfile] = field(default_factory=dict)
    # per message sid: the furthest status (the first of its rank), the earliest arrival, an error code
    statuses: dict[str, tuple[DeliveryStatus, datetime, int | None]] = field(default_factory=dict)
    recordings: dict[str, CallRecording] = field(default_factory=dict)

    def seen(self, customer_id: str, conversation_id: str, at: datetime, is_message: bool) -> None:
        self.customers.append((customer_id, at))
        self.conversations.append((conversation_id, customer_id, at, at if is_message else None))

    def add(self, record: Any) -> None:
        if isinstance(record, Message):
            if record.control is not None:
                return  # the workspace's handback is a signal to the agent, not something the customer said
            at = _utc(record.received_at)
            self.seen(record.customer_id, record.conversation_id, at, True)
            self.messages.append((
                record.message_id, record.conversation_id, record.customer_id, "customer", record.channel,
                record.sender, record.text, None, record.content_type, None, record.provider_message_id, at,
                json.dumps(record.channel_meta, sort_keys=True),
            ))  # fmt: skip
        elif isinstance(record, OutboundMessage):
            at = _utc(record.created_at)
            self.seen(record.customer_id, record.conversation_id, at, True)
            self.messages.append((
                record.reply_id, record.conversation_id, record.customer_id, record.author, record.channel,
                record.recipient, record.text, record.in_reply_to, record.content_format, record.subject, None, at,
                "{}",
            ))  # fmt: skip
        elif isinstance(record, Escalation):
            at = _utc(record.created_at)
            self.seen(record.customer_id, record.conversation_id, at, False)
            nlu = record.nlu
            self.escalations.append((
                record.escalation_id, record.message_id, record.conversation_id, record.customer_id,
                record.session_id, record.channel, record.reason, record.detail, record.priority,
                nlu.intent if nlu else None, nlu.confidence if nlu else None,
                json.dumps(record.slots, sort_keys=True), json.dumps(record.recommended_actions), at,
            ))  # fmt: skip
        elif isinstance(record, ConversationEvent):
            at = _utc(record.timestamp)
            self.seen(record.customer_id, record.conversation_id, at, False)
            closed = record.event_type == "session_closed"
            self.sessions.append((
                record.session_id, record.conversation_id, record.customer_id, None if closed else at,
                record.event_type == "escalated", at if closed else None,
            ))  # fmt: skip
            if record.action is not None:
                action = record.action
                self.actions.append((
                    record.event_id, record.conversation_id, record.session_id, record.customer_id, action.type,
                    action.name, action.status, json.dumps(action.result, sort_keys=True, default=str), at,
                ))  # fmt: skip
            self.knowledge_uses.extend(_knowledge_uses(record, at))
        elif isinstance(record, Feedback):
            self.feedback.append((
                record.feedback_id, record.conversation_id, record.message_id, record.escalation_id, record.kind,
                record.resolution_code, record.original_intent, record.corrected_intent, record.rating,
                record.comment, record.author, record.agent_id, record.channel, record.handle_time_s,
                record.first_response_s, _utc(record.at),
            ))  # fmt: skip
        elif isinstance(record, CustomerProfile):
            # within a batch, too, the latest profile wins (ties broken by content, so the choice is stable)
            held = self.profiles.get(record.customer_id)
            if held is None or (_utc(record.updated_at), record.model_dump_json()) > (
                _utc(held.updated_at),
                held.model_dump_json(),
            ):
                self.profiles[record.customer_id] = record
        elif isinstance(record, DeliveryStatus):
            at = _utc(record.received_at)
            held = self.statuses.get(record.message_sid)
            if held is None:
                self.statuses[record.message_sid] = (record, at, record.error_code)
            else:
                best, first, error = held
                if record.rank > best.rank:
                    best, error = record, record.error_code if record.error_code is not None else error
                elif record.status == best.status and error is None:
                    error = record.error_code
                self.statuses[record.message_sid] = (best, min(first, at), error)
        elif isinstance(record, CallRecording):
            held_recording = self.recordings.get(record.recording_sid)
            if held_recording is None or record.rank > held_recording.rank:
                self.recordings[record.recording_sid] = record
        else:
            raise TypeError(f"the conversation store does not take {type(record).__name__} records")

    def status_rows(self) -> list[tuple[Any, ...]]:
        return [
            (sid, s.provider, s.status, s.rank, error, s.recipient, first, _utc(s.received_at))
            for sid, (s, first, error) in sorted(self.statuses.items())
        ]

    def recording_rows(self) -> list[tuple[Any, ...]]:
        return [
            (r.recording_sid, r.call_sid, r.provider, r.recording_url, r.status, r.rank, r.duration_s,
             _utc(r.received_at))
            for r in sorted(self.recordings.values(), key=lambda r: r.recording_sid)
        ]  # fmt: skip


def _knowledge_uses(event: ConversationEvent, at: datetime) -> list[tuple[Any, ...]]:
    """The articles a turn used: those its reply cited, or those its knowledge_gap hand-over carried."""
    knowledge = event.knowledge
    if knowledge is None or event.message is None:
        return []
    if event.event_type == "turn_processed":
        uses = [(doc_id, "cited") for doc_id in knowledge.cited]
    elif event.event_type == "escalated" and not knowledge.answered:
        # escalate carries the passages only when the knowledge base could not answer (a gap); a follow-up
        # to a human holding the conversation carries none, so it uses no article either
        follow_up = event.action is not None and event.action.status == "follow_up"
        uses = [] if follow_up else [(doc_id, "handed_over") for doc_id in knowledge.found]
    else:
        uses = []
    intent = event.nlu.intent if event.nlu else None
    return [
        (doc_id, event.event_id, use, event.conversation_id, event.session_id, event.customer_id, event.message.id,
         event.channel, intent, knowledge.confidence, at)
        for doc_id, use in uses
    ]  # fmt: skip


async def intent_corrections(conn: asyncpg.Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Each corrected customer message's text with its latest corrected intent (`label`), by message id.

    Keys: text, label, original_intent, message_id, at. Corrections of messages the store does not
    hold (or that had no text) are left out: there is nothing to train on.
    """
    return [dict(row) for row in await conn.fetch(_INTENT_CORRECTIONS, since)]


class PostgresStore:
    """`ConversationStore` on PostgreSQL through an asyncpg pool (created on first use)."""

    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._on_close: list[Callable[[], object]] = []

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self.pool_size,
                        server_settings={"timezone": "UTC", "application_name": "supportflow"},
                    )
        return self._pool

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the versions applied."""
        async with (await self.pool()).acquire() as conn:
            return await apply_migrations(conn)

    async def write(self, topic: str, records: Sequence[Any]) -> int:
        """Upsert a batch of records of any supported type in one transaction; returns how many were taken."""
        if not records:
            return 0
        batch = _Batch()
        for record in records:
            try:
                batch.add(record)
            except TypeError as exc:
                raise TypeError(f"{topic}: {exc}") from None
        async with (await self.pool()).acquire() as conn, conn.transaction():
            if batch.profiles:
                await self._write_profiles(conn, list(batch.profiles.values()))
            if batch.customers:
                await conn.execute(_CUSTOMERS_SEEN, *_columns(batch.customers, 2))
                await conn.execute(_CONVERSATIONS, *_columns(batch.conversations, 4))
            if batch.messages:
                await conn.execute(_MESSAGES, *_columns(batch.messages, 13))
            if batch.sessions:
                await conn.execute(_SESSIONS, *_columns(batch.sessions, 6))
            if batch.escalations:
                await conn.execute(_ESCALATIONS, *_columns(batch.escalations, 14))
            if batch.actions:
                await conn.execute(_ACTIONS, *_columns(batch.actions, 9))
            if batch.knowledge_uses:
                await conn.execute(_KNOWLEDGE_USES, *_columns(batch.knowledge_uses, 11))
            if batch.statuses:
                await conn.execute(_DELIVERY_STATUSES, *_columns(batch.status_rows(), 8))
            if batch.recordings:
                await conn.execute(_CALL_RECORDINGS, *_columns(batch.recording_rows(), 8))
            if batch.feedback:
                await conn.execute(_FEEDBACK, *_columns(batch.feedback, 16))
        return len(records)

    @staticmethod
    async def _write_profiles(conn: asyncpg.Connection, profiles: list[CustomerProfile]) -> None:
        rows = [
            (
                p.customer_id,
                p.display_name,
                json.dumps(p.preferences, sort_keys=True),
                p.vip_tier,
                p.language,
                p.lifetime.model_dump_json(),
                _utc(p.updated_at),
            )
            for p in profiles
        ]
        winners = {row["customer_id"] for row in await conn.fetch(_PROFILES, *_columns(rows, 7))}
        if not winners:
            return
        await conn.execute(_DROP_CONTACTS, sorted(winners))
        contacts: dict[tuple[str, str], str] = {}
        for profile in sorted(profiles, key=lambda p: _utc(p.updated_at)):
            if profile.customer_id in winners:
                for contact in profile.contacts:
                    contacts[(contact.channel, contact.address)] = profile.customer_id
        if contacts:
            await conn.execute(_CONTACTS, *_columns(((c, a, who) for (c, a), who in contacts.items()), 3))

    async def conversation_snapshot(self, conversation_id: str) -> dict[str, Any] | None:
        """The conversation, its messages and replies in order, sessions, escalations, actions and call
        recordings, as JSON values."""
        async with (await self.pool()).acquire() as conn:
            text = await conn.fetchval(_SNAPSHOT, conversation_id)
        return None if text is None else json.loads(text)

    async def article_conversations(self, doc_id: str, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """The conversations that used article `doc_id` (cited by a reply, carried by a hand-over), newest first.

        Keys: total (conversations in all), conversations (this page: see `_ARTICLE_CONVERSATIONS`).
        """
        async with (await self.pool()).acquire() as conn:
            total = await conn.fetchval(
                "SELECT count(DISTINCT conversation_id) FROM knowledge_uses WHERE doc_id = $1", doc_id
            )
            rows = await conn.fetch(_ARTICLE_CONVERSATIONS, doc_id, limit, offset)
        return {"total": total, "conversations": [dict(row) for row in rows]}

    async def intent_corrections(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Corrected messages as training rows: see `intent_corrections`."""
        async with (await self.pool()).acquire() as conn:
            return await intent_corrections(conn, since)

    async def customer_for_address(self, channel: str, address: str) -> str | None:
        """Whose address this is (identity across channels), if any profile claims it."""
        async with (await self.pool()).acquire() as conn:
            return await conn.fetchval(
                "SELECT customer_id FROM customer_contacts WHERE channel = $1 AND address = $2", channel, address
            )

    async def profile(self, customer_id: str) -> CustomerProfile | None:
        """The stored profile (None until one arrived for this customer)."""
        async with (await self.pool()).acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM customers WHERE customer_id = $1 AND profile_updated_at IS NOT NULL", customer_id
            )
            if row is None:
                return None
            contacts = await conn.fetch(
                "SELECT channel, address FROM customer_contacts WHERE customer_id = $1 ORDER BY channel, address",
                customer_id,
            )
        return CustomerProfile(
            customer_id=row["customer_id"],
            display_name=row["display_name"],
            contacts=[ContactAddress(channel=c["channel"], address=c["address"]) for c in contacts],
            preferences=json.loads(row["preferences"]),
            vip_tier=row["vip_tier"],
            language=row["language"],
            lifetime=json.loads(row["lifetime"]),
            updated_at=row["profile_updated_at"],
        )

    def close_with(self, callback: Callable[[], object]) -> None:
        """Run `callback()` after the pool closes (e.g. stop the embedded server this store started)."""
        self._on_close.append(callback)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        while self._on_close:
            await asyncio.to_thread(self._on_close.pop())
