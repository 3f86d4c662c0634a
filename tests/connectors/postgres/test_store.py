"""The PostgreSQL conversation store against a real server: migrations, idempotent batch upserts, reads."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from connectors.postgres import PostgresStore, available_migrations, migrate, migration_status
from schemas import (
    CallRecording,
    ContactAddress,
    ConversationEvent,
    CustomerProfile,
    DeliveryStatus,
    Escalation,
    EventAction,
    EventMetadata,
    Feedback,
    Message,
    OutboundMessage,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TABLES = [
    "customers", "customer_contacts", "conversations", "messages", "sessions", "escalations", "actions", "feedback",
    "delivery_statuses", "call_recordings",
]  # fmt: skip


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def message(n: int, seconds: float, text: str = "", conversation: str = "conv-alice") -> Message:
    return Message(
        message_id=f"m{n}",
        conversation_id=conversation,
        customer_id=conversation.removeprefix("conv-"),
        channel="sms",
        sender="+15550100",
        text=text or f"customer message {n}",
        received_at=at(seconds),
    )


def reply(n: int, seconds: float, author: str = "agent", conversation: str = "conv-alice") -> OutboundMessage:
    return OutboundMessage(
        reply_id=f"m{n}:reply",
        in_reply_to=f"m{n}",
        conversation_id=conversation,
        customer_id=conversation.removeprefix("conv-"),
        channel="sms",
        recipient="+15550100",
        text=f"reply to {n}",
        author=author,  # type: ignore[arg-type]
        created_at=at(seconds),
    )


def event(n: int, kind: str, seconds: float, session: str = "s1", with_action: bool = False) -> ConversationEvent:
    return ConversationEvent(
        event_id=f"e{n}",
        event_type=kind,  # type: ignore[arg-type]
        timestamp=at(seconds),
        conversation_id="conv-alice",
        session_id=session,
        customer_id="alice",
        channel="sms",
        action=EventAction(type="api", name="order_status", status="succeeded", result={"order": "1234567"})
        if with_action
        else None,
        metadata=EventMetadata(latency_ms=12.5, model_used="keywords"),
    )


def escalation(n: int, seconds: float) -> Escalation:
    return Escalation(
        escalation_id=f"m{n}:escalation",
        message_id=f"m{n}",
        conversation_id="conv-alice",
        customer_id="alice",
        session_id="s1",
        channel="sms",
        recipient="+15550100",
        text=f"customer message {n}",
        reason="customer_requested_human",
        priority="high",
        slots={"order": "1234567"},
        recommended_actions=["refund"],
        created_at=at(seconds),
    )


def profile(seconds: float, contacts: list[tuple[str, str]], tier: str = "gold", who: str = "alice") -> CustomerProfile:
    return CustomerProfile(
        customer_id=who,
        display_name=f"{who.title()} ({seconds})",
        contacts=[ContactAddress(channel=c, address=a) for c, a in contacts],  # type: ignore[arg-type]
        preferences={"tone": "formal"},
        vip_tier=tier,  # type: ignore[arg-type]
        language="fr",
        updated_at=at(seconds),
    )


def status(sid: str, state: str, seconds: float, error: int | None = None) -> DeliveryStatus:
    return DeliveryStatus(
        message_sid=sid,
        status=state,  # type: ignore[arg-type]
        error_code=error,
        recipient="+15550100",
        received_at=at(seconds),
    )


def recording(sid: str, call: str, seconds: float, state: str = "completed") -> CallRecording:
    return CallRecording(
        recording_sid=sid,
        call_sid=call,
        recording_url=f"https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/{sid}",
        status=state,  # type: ignore[arg-type]
        duration_s=42 if state == "completed" else None,
        received_at=at(seconds),
    )


def call_turn(n: int, seconds: float, call: str = "CA1") -> Message:
    return message(n, seconds, text="I want to cancel my order").model_copy(
        update={
            "channel": "voice",
            "channel_meta": {"call_sid": call, "confidence": "0.92", "recording_url": f"https://rec/{call}-{n}"},
        }
    )


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(postgres_dsn, pool_size=4)
    assert await s.migrate() == [m.version for m in available_migrations()]
    try:
        yield s
    finally:
        await s.close()


async def dump_tables(dsn: str) -> dict[str, list[str]]:
    """Every row of every table with its xmin: a rewritten row shows up even if its values are equal."""
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: [r[0] for r in await conn.fetch(f"SELECT xmin::text || ' ' || to_jsonb(t)::text FROM {table} t")]
            for table in TABLES
        }
    finally:
        await conn.close()


async def dump_schema(conn: asyncpg.Connection) -> list[Any]:
    columns = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY 1, 2"
    )
    indexes = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
    applied = await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY 1")
    return [list(map(tuple, columns)), list(map(tuple, indexes)), list(map(tuple, applied))]


async def test_migrations_apply_to_an_empty_database_and_a_second_run_changes_nothing(postgres_dsn):
    conn = await asyncpg.connect(postgres_dsn)
    try:
        before = await migration_status(conn)
        versions = [m.version for m in available_migrations()]
        assert versions[:2] == ["0001_initial", "0002_commerce"]
        assert before.applied == [] and before.pending == versions
        assert await migrate(conn) == versions
        schema = await dump_schema(conn)
        assert {row[0] for row in schema[0]} >= {*TABLES, "schema_migrations"}
        assert "messages_conversation_at_idx" in {row[0] for row in schema[1]}
        assert await migrate(conn) == []
        assert await dump_schema(conn) == schema
        after = await migration_status(conn)
        assert after.applied == versions and after.pending == [] and after.changed == []
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(postgres_dsn):
    conns = [await asyncpg.connect(postgres_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(results) == [[], [], [m.version for m in available_migrations()]]
    finally:
        for c in conns:
            await c.close()


def every_record_type() -> dict[str, list[Any]]:
    return {
        "sf.profiles": [profile(0, [("sms", "+15550100"), ("email", "alice@example.com")])],
        "sf.messages": [message(1, 0), message(2, 10), message(3, 20, conversation="conv-bob")],
        "sf.outbound": [reply(1, 1), reply(2, 11, author="human"), reply(3, 21, conversation="conv-bob")],
        "sf.escalations": [escalation(2, 10.5)],
        "sf.events": [
            event(1, "turn_processed", 1, with_action=True),
            event(2, "escalated", 10.5),
            event(3, "session_closed", 100),
        ],
        "sf.delivery": [status("SM1", "sent", 2), status("SM1", "delivered", 3), status("SM2", "failed", 4, 30003)],
        "sf.recordings": [recording("RE1", "CA1", 30, "in-progress"), recording("RE1", "CA1", 40)],
        "sf.feedback": [
            feedback("resolve-1", "resolution", 30, resolution_code="solved", handle_time_s=12.5, first_response_s=3),
            feedback("csat-1", "csat", 40, rating=4, comment="Thanks Ann, call me on +1 555 0100", author="customer"),
            feedback("fix-1", "intent_correction", 50, message_id="m2", original_intent="track_order",
                     corrected_intent="get_refund"),
        ],
    }  # fmt: skip


def feedback(action: str, kind: str, seconds: float, **fields: Any) -> Feedback:
    return Feedback(
        feedback_id=Feedback.derive_id(action),
        conversation_id="conv-alice",
        kind=kind,  # type: ignore[arg-type]
        author=fields.pop("author", "agent-ann"),
        channel="sms",
        at=at(seconds),
        **fields,
    )


async def test_writing_every_batch_twice_leaves_identical_rows(store, postgres_dsn):
    batches = every_record_type()
    for topic, records in batches.items():
        assert await store.write(topic, records) == len(records)
    once = await dump_tables(postgres_dsn)
    assert all(once[table] for table in TABLES), "every table got rows"
    for topic, records in batches.items():
        await store.write(topic, records)
    assert await dump_tables(postgres_dsn) == once


async def test_a_batch_holding_the_same_records_twice_stores_them_once(store, postgres_dsn):
    records = [r for batch in every_record_type().values() for r in batch]
    await store.write("mixed", records + records)
    doubled = await dump_tables(postgres_dsn)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 6
        assert await conn.fetchval("SELECT count(*) FROM actions") == 1
    finally:
        await conn.close()
    await store.write("mixed", records)
    assert await dump_tables(postgres_dsn) == doubled


async def test_replies_and_customer_messages_come_back_in_order(store):
    # ids sort against time (m9 is first), replies arrive before the messages they answer
    await store.write("sf.outbound", [reply(2, 11, author="human"), reply(9, 1)])
    await store.write("sf.messages", [message(2, 10), message(9, 0)])
    await store.write("sf.escalations", [escalation(2, 10.5)])
    snapshot = await store.conversation_snapshot("conv-alice")
    assert snapshot is not None
    assert [(m["message_id"], m["role"]) for m in snapshot["messages"]] == [
        ("m9", "customer"),
        ("m9:reply", "agent"),
        ("m2", "customer"),
        ("m2:reply", "human"),
    ]
    assert snapshot["messages"][1]["in_reply_to"] == "m9"
    conversation = snapshot["conversation"]
    assert conversation["message_count"] == 4
    assert datetime.fromisoformat(conversation["started_at"]) == at(0)
    assert datetime.fromisoformat(conversation["last_message_at"]) == at(11)
    assert [e["escalation_id"] for e in snapshot["escalations"]] == ["m2:escalation"]
    assert await store.conversation_snapshot("conv-nobody") is None


async def test_a_reply_stamped_at_the_same_instant_follows_the_message(store):
    early_id = reply(1, 0).model_copy(update={"reply_id": "0-sorts-first"})
    await store.write("sf.outbound", [early_id])
    await store.write("sf.messages", [message(1, 0)])
    snapshot = await store.conversation_snapshot("conv-alice")
    assert snapshot is not None and [m["role"] for m in snapshot["messages"]] == ["customer", "agent"]


async def test_sessions_are_derived_the_same_whatever_order_events_arrive_in(store):
    events = [
        event(1, "turn_processed", 5, with_action=True),
        event(2, "turn_processed", 1),
        event(3, "escalated", 9),
        event(4, "session_closed", 60),
        event(5, "turn_processed", 3, session="s2"),
    ]
    random.Random(7).shuffle(events)
    for one in events:
        await store.write("sf.events", [one])
    snapshot = await store.conversation_snapshot("conv-alice")
    assert snapshot is not None
    sessions = {s["session_id"]: s for s in snapshot["sessions"]}
    s1 = sessions["s1"]
    assert datetime.fromisoformat(s1["started_at"]) == at(1)
    assert datetime.fromisoformat(s1["last_activity_at"]) == at(9)
    assert datetime.fromisoformat(s1["closed_at"]) == at(60)
    assert s1["escalated"] is True
    assert sessions["s2"]["closed_at"] is None and sessions["s2"]["escalated"] is False
    assert [(a["name"], a["result"]) for a in snapshot["actions"]] == [("order_status", {"order": "1234567"})]
    assert snapshot["conversation"]["last_message_at"] is None, "events are not messages"


async def test_an_older_profile_does_not_overwrite_a_newer_one_and_contacts_are_replaced(store):
    newer = profile(10, [("email", "alice@example.com"), ("sms", "+15550100")], tier="platinum")
    older = profile(0, [("webchat", "web-alice")], tier="silver")
    await store.write("sf.profiles", [newer])
    await store.write("sf.profiles", [older])
    stored = await store.profile("alice")
    assert stored is not None and stored.vip_tier == "platinum" and stored.updated_at == at(10)
    assert await store.customer_for_address("webchat", "web-alice") is None
    latest = profile(20, [("whatsapp", "+15550100")], tier="gold")
    await store.write("sf.profiles", [latest])
    stored = await store.profile("alice")
    assert stored == latest
    assert await store.customer_for_address("email", "alice@example.com") is None, "old contacts were dropped"
    assert await store.customer_for_address("whatsapp", "+15550100") == "alice"


async def test_the_latest_profile_of_a_batch_wins_whatever_its_place(store):
    await store.write("sf.profiles", [profile(20, [("sms", "+1")], tier="gold"), profile(5, [("sms", "+2")])])
    stored = await store.profile("alice")
    assert stored is not None and stored.updated_at == at(20)
    assert [c.address for c in stored.contacts] == ["+1"]


async def test_customer_is_found_by_any_of_their_contacts(store):
    contacts = [("email", "alice@example.com"), ("sms", "+15550100"), ("slack", "U024BE7LH")]
    await store.write("sf.profiles", [profile(0, contacts), profile(0, [("email", "bob@example.com")], who="bob")])
    for channel, address in contacts:
        assert await store.customer_for_address(channel, address) == "alice"
    assert await store.customer_for_address("email", "bob@example.com") == "bob"
    assert await store.customer_for_address("sms", "alice@example.com") is None, "an address belongs to its channel"


async def test_an_address_claimed_by_a_newer_profile_of_another_customer_moves_to_them(store):
    await store.write("sf.profiles", [profile(0, [("sms", "+15550100")])])
    await store.write("sf.profiles", [profile(5, [("sms", "+15550100")], who="bob")])
    assert await store.customer_for_address("sms", "+15550100") == "bob"


async def test_a_customer_seen_only_in_messages_has_no_profile(store):
    await store.write("sf.messages", [message(1, 0)])
    assert await store.profile("alice") is None


async def test_raw_text_with_emails_and_phone_numbers_is_stored_intact(store, postgres_dsn):
    text = (
        "  Mail me at jane.doe+orders@example.com or call +1 (555) 010-9999 \u2014 "
        "d\u00e9j\u00e0 vu \U0001f642\n'; DROP"
    )
    await store.write("sf.messages", [message(1, 0, text=text)])
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT text FROM messages WHERE message_id = 'm1'") == text
    finally:
        await conn.close()
    snapshot = await store.conversation_snapshot("conv-alice")
    assert snapshot is not None and snapshot["messages"][0]["text"] == text


async def test_a_record_the_store_does_not_keep_is_refused(store):
    with pytest.raises(TypeError, match=r"^sf\.messages: the conversation store does not take dict"):
        await store.write("sf.messages", [{"message_id": "m1"}])


async def fetch_statuses(dsn: str) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["message_sid"]: dict(r) for r in await conn.fetch("SELECT * FROM delivery_statuses")}
    finally:
        await conn.close()


async def test_a_delivery_status_never_moves_backwards_whatever_order_callbacks_arrive_in(store, postgres_dsn):
    # one at a time, out of order: delivered, then a late sent and queued
    for one in [status("SM1", "delivered", 5), status("SM1", "sent", 6), status("SM1", "queued", 7)]:
        await store.write("sf.delivery", [one])
    # in one batch, out of order: undelivered (with its error code) before sending
    await store.write("sf.delivery", [status("SM2", "undelivered", 5, 30005), status("SM2", "sending", 6)])
    # the error code comes on the failure; a later callback of the same rank does not replace it
    await store.write("sf.delivery", [status("SM3", "sent", 1)])
    await store.write("sf.delivery", [status("SM3", "failed", 2, 30003)])
    await store.write("sf.delivery", [status("SM3", "undelivered", 3, 30008)])
    # an outcome that contradicts the stored one lends it no error code
    await store.write("sf.delivery", [status("SM1", "failed", 8, 30003)])
    rows = await fetch_statuses(postgres_dsn)
    assert {sid: (r["status"], r["error_code"]) for sid, r in rows.items()} == {
        "SM1": ("delivered", None),
        "SM2": ("undelivered", 30005),
        "SM3": ("failed", 30003),
    }
    assert rows["SM1"]["first_at"] == at(5) and rows["SM1"]["updated_at"] == at(5)
    assert rows["SM3"]["first_at"] == at(1) and rows["SM3"]["updated_at"] == at(2)
    # WhatsApp's read comes after delivered
    await store.write("sf.delivery", [status("SM1", "read", 9)])
    assert (await fetch_statuses(postgres_dsn))["SM1"]["status"] == "read"


async def test_a_failure_reported_without_its_code_gets_the_code_a_later_callback_brings(store, postgres_dsn):
    await store.write("sf.delivery", [status("SM4", "failed", 1)])
    await store.write("sf.delivery", [status("SM4", "failed", 2, 30007)])
    in_one_batch = [status("SM5", "sent", 1), status("SM5", "failed", 2), status("SM5", "failed", 3, 30001)]
    await store.write("sf.delivery", in_one_batch)
    rows = await fetch_statuses(postgres_dsn)
    assert (rows["SM4"]["status"], rows["SM4"]["error_code"], rows["SM4"]["updated_at"]) == ("failed", 30007, at(1))
    assert (rows["SM5"]["status"], rows["SM5"]["error_code"], rows["SM5"]["updated_at"]) == ("failed", 30001, at(2))


async def test_a_call_turn_keeps_its_call_sid_confidence_and_recording_in_the_conversation(store):
    await store.write("sf.messages", [call_turn(1, 0), call_turn(2, 20, call="CA2")])
    await store.write("sf.recordings", [recording("RE1", "CA1", 60), recording("RE9", "CA-elsewhere", 61)])
    await store.write("sf.recordings", [recording("RE2", "CA2", 62, "in-progress")])
    await store.write("sf.recordings", [recording("RE2", "CA2", 63)])
    await store.write("sf.recordings", [recording("RE2", "CA2", 64, "in-progress")])  # late: changes nothing
    snapshot = await store.conversation_snapshot("conv-alice")
    assert snapshot is not None
    first = snapshot["messages"][0]
    assert (first["channel"], first["text"]) == ("voice", "I want to cancel my order")
    assert first["channel_meta"] == {"call_sid": "CA1", "confidence": "0.92", "recording_url": "https://rec/CA1-1"}
    recordings = [(r["recording_sid"], r["call_sid"], r["status"], r["duration_s"]) for r in snapshot["recordings"]]
    assert recordings == [("RE1", "CA1", "completed", 42), ("RE2", "CA2", "completed", 42)]
    assert snapshot["recordings"][0]["recording_url"].endswith("/Recordings/RE1")


async def test_feedback_is_stored_whole_once_per_id_for_training(store, postgres_dsn):
    records = every_record_type()["sf.feedback"]
    await store.write("sf.feedback", records + records)
    await store.write("sf.feedback", records[:1])  # a replayed action
    conn = await asyncpg.connect(postgres_dsn)
    try:
        rows = await conn.fetch("SELECT * FROM feedback ORDER BY at")
    finally:
        await conn.close()
    assert [r["feedback_id"] for r in rows] == [r.feedback_id for r in records]
    resolution, csat, _ = rows
    assert (resolution["resolution_code"], resolution["handle_time_s"], resolution["first_response_s"]) == (
        "solved", 12.5, 3.0,
    )  # fmt: skip
    assert (csat["rating"], csat["comment"], csat["author"]) == (4, "Thanks Ann, call me on +1 555 0100", "customer")


async def test_intent_corrections_come_back_as_text_and_label_with_the_latest_correction(store):
    await store.write("sf.messages", [message(1, 0, text="I was charged twice"), message(2, 10, text="hi")])
    await store.write(
        "sf.feedback",
        [
            feedback("fix-a", "intent_correction", 20, message_id="m1", original_intent="greeting",
                     corrected_intent="complaint"),
            feedback("fix-b", "intent_correction", 30, message_id="m1", original_intent="greeting",
                     corrected_intent="payment_issue"),
            feedback("fix-c", "intent_correction", 40, message_id="m-unknown", corrected_intent="complaint"),
            feedback("rating", "reply_rating", 50, message_id="m2", rating=2),
        ],
    )  # fmt: skip
    rows = await store.intent_corrections()
    assert [(r["text"], r["label"], r["original_intent"]) for r in rows] == [
        ("I was charged twice", "payment_issue", "greeting")
    ], "the latest correction of a message wins; a message the store does not hold has no text to train on"
    assert await store.intent_corrections(since=at(35)) == []


async def test_the_workspace_handback_is_not_stored_as_something_the_customer_said(store, postgres_dsn):
    handback = message(9, 5).model_copy(update={"text": "", "control": "handback"})
    await store.write("sf.messages", [message(1, 0), handback])
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert [r["message_id"] for r in await conn.fetch("SELECT message_id FROM messages")] == ["m1"]
    finally:
        await conn.close()
