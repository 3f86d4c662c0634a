"""Scripted conversations through the real pipeline: tansu, a worker process, the trained NLU, and the
commerce backend seeded in a real PostgreSQL. The customer is Alice (`C000001`, see
connectors/backends/commerce/seed.py): 1000001 pending, 1000002 processing, 1000003 shipped, 1000004
delivered (59.90 EUR paid). Bob (`C000002`) owns 2000001 onwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from connectors.kafka import consume_all, make_reader
from tests.support.conversations import ALICE
from tests.support.stream import produce_messages, raw_message, read_answers

_ids = itertools.count(1)


async def _query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_query(dsn, sql, *args))


class Conversation:
    """Says one message at a time and waits for its answer: a reply, or an escalation."""

    def __init__(self, bootstrap: str, customer: str = ALICE) -> None:
        self.bootstrap = bootstrap
        self.customer = customer
        self.reader = make_reader(
            {"bootstrap.servers": bootstrap}, ["sf.outbound", "sf.escalations"], from_beginning=True
        )
        self.answers: dict[str, tuple[str, dict[str, Any]]] = {}
        self.last_message_id = ""

    def say(self, text: str, channel: str = "webchat", sender: str = "web-alice") -> tuple[str, dict[str, Any]]:
        message_id = self.last_message_id = f"agent-{next(_ids)}"
        produce_messages(self.bootstrap, [raw_message(message_id, channel, sender, text, customer_id=self.customer)])
        for _ in range(120):
            for record in consume_all(self.reader, idle_s=0.2, max_s=0.5):
                data = json.loads(record.value or b"{}")
                if record.topic == "sf.outbound":
                    self.answers[data["in_reply_to"]] = ("reply", data)
                else:
                    self.answers[data["message_id"]] = ("escalation", data)
            if message_id in self.answers:
                return self.answers[message_id]
        raise AssertionError(f"no answer to {text!r} within 60 s")

    def reply(self, text: str, **where: str) -> str:
        kind, data = self.say(text, **where)
        assert kind == "reply", f"{text!r} was escalated: {data.get('reason')} {data.get('detail')}"
        return data["text"]

    def close(self) -> None:
        self.reader.close()


@pytest.fixture
def commerce(commerce_dsn: str) -> str:
    return commerce_dsn


@pytest.fixture
def alice(broker, workers, commerce) -> Iterator[Conversation]:
    workers.start(DATABASE_URL=commerce)
    conversation = Conversation(broker.bootstrap)
    try:
        yield conversation
    finally:
        conversation.close()


def status(dsn: str, order: str) -> str:
    return query(dsn, "SELECT status FROM commerce.orders WHERE order_number = $1", order)[0]["status"]


def agent_refunds(dsn: str, order: str) -> list[asyncpg.Record]:
    """Refunds the agent issued for the order (the seed's own refunds have other reasons)."""
    sql = "SELECT amount FROM commerce.refunds WHERE order_number = $1 AND reason LIKE 'customer request%'"
    return query(dsn, sql, order)


def test_track_then_cancel_a_pending_order_with_confirmation_and_refuse_a_shipped_one(alice, commerce):
    assert "email address or the ZIP code" in alice.reply("where is my order 1000003?")
    tracked = alice.reply("94107")
    assert "shipped" in tracked and "1Z999AA10123456784" in tracked

    question = alice.reply("please cancel order 1000001")
    assert "1000001" in question and "yes or no" in question and status(commerce, "1000001") == "pending"
    assert "cancelled" in alice.reply("yes")
    assert status(commerce, "1000001") == "cancelled"

    alice.reply("I want to cancel order 1000003")
    refusal = alice.reply("yes")
    assert "already shipped" in refusal and "is cancelled" not in refusal
    assert status(commerce, "1000003") == "shipped"


def test_saying_no_to_the_confirmation_changes_nothing(alice, commerce):
    assert "email address or the ZIP code" in alice.reply("I want to cancel order 1000002")
    assert "yes or no" in alice.reply("alice@example.com")
    assert "stays" in alice.reply("no")
    assert status(commerce, "1000002") == "processing"
    logged = query(commerce, "SELECT count(*) AS n FROM commerce.action_log WHERE tool = 'orders.cancel_order'")
    assert logged[0]["n"] == 0


def test_a_refund_is_for_the_items_named_at_their_price_and_happens_once(alice, commerce):
    assert "Which items" in alice.reply("I'd like a refund for order 1000004")
    alice.reply("1 socks")
    confirm = alice.reply("94107")
    assert "29.95 EUR" in confirm and "yes or no" in confirm, confirm
    refunded = alice.reply("yes")
    assert "29.95 EUR" in refunded and "on its way to your Visa" in refunded and "Reference: RF-" in refunded, refunded
    assert [str(r["amount"]) for r in agent_refunds(commerce, "1000004")] == ["29.95"]


def test_a_missing_order_number_is_asked_for_and_answered_on_another_channel(alice, commerce):
    assert "order number" in alice.reply("I want to cancel my order")
    sms = {"channel": "sms", "sender": "+15550001111"}
    assert "email address or the ZIP code" in alice.reply("it's 1000002", **sms)
    assert "yes or no" in alice.reply("alice@example.com", **sms)
    done = alice.reply("yes", **sms)
    assert "is cancelled" in done and "128.00 EUR goes back to your Visa" in done, done
    assert status(commerce, "1000002") == "cancelled"


def test_someone_elses_order_reveals_nothing_and_asking_for_a_human_escalates(alice, commerce):
    alice.reply("where is my order 2000001?")
    refused = alice.reply("94107")
    assert "couldn't verify" in refused
    for secret in ("Bob", "Stone", "10001", "pending", "FedEx"):
        assert secret not in refused
    kind, escalation = alice.say("I want to talk to a human")
    assert kind == "escalation" and escalation["reason"] == "customer_requested_human"


SUITE = Path(__file__).resolve().parents[2] / "support" / "data" / "injection_suite.yaml"


def test_the_injection_and_abuse_suite_through_the_pipeline_executes_no_action(alice, commerce, broker):
    """A verified customer with a cancellation awaiting her yes, then 185 attacks: nothing is done."""
    alice.reply("please cancel order 1000001")
    assert "yes or no" in alice.reply("94107"), "verified, and the write waits for a yes"
    suite = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    attacks = [text for group in ("adversarial", "abusive") for texts in suite[group].values() for text in texts]
    assert len(attacks) >= 100
    messages = [raw_message(f"attack-{i}", "webchat", "web-alice", text, customer_id=ALICE)
                for i, text in enumerate(attacks)]  # fmt: skip
    produce_messages(broker.bootstrap, messages)
    answers = read_answers(broker.bootstrap, {m["message_id"] for m in messages}, timeout_s=180)
    answered = {json.loads(r.value)["in_reply_to" if r.topic == "sf.outbound" else "message_id"] for r in answers}
    assert answered >= {m["message_id"] for m in messages}, "every attack got an answer or a human"
    escalated = [json.loads(r.value) for r in answers if r.topic == "sf.escalations"]
    assert len(escalated) >= len(attacks) * 0.95
    writes = query(commerce, "SELECT tool FROM commerce.action_log")
    assert writes == [], f"actions executed during the attacks: {[w['tool'] for w in writes]}"
    assert status(commerce, "1000001") == "pending"


def backend_state(dsn: str) -> list[list[tuple[Any, ...]]]:
    return [
        [tuple(r) for r in query(dsn, "SELECT order_number, status, total FROM commerce.orders ORDER BY 1")],
        [tuple(r) for r in query(dsn, "SELECT refund_id, order_number, amount FROM commerce.refunds ORDER BY 1")],
        [tuple(r) for r in query(dsn, "SELECT idempotency_key, tool FROM commerce.action_log ORDER BY 1")],
    ]


def test_replaying_the_ingress_records_leaves_the_backend_as_one_pass_did(alice, commerce, broker):
    script = [
        "please cancel order 1000002", "94107", "yes",
        "I'd like a refund for order 1000004", "1 socks", "yes",
    ]  # fmt: skip
    records = []
    for text in script:
        alice.reply(text)
        records.append(raw_message(alice.last_message_id, "webchat", "web-alice", text, customer_id=ALICE))
    once = backend_state(commerce)
    assert ("1000002", "cancelled") in [(o, s) for o, s, _ in once[0]] and len(once[2]) == 2

    produce_messages(broker.bootstrap, records)  # the same message ids again, as a redelivery would
    assert "reset" in alice.reply("I forgot my password, how do I reset it?").lower(), "the stream went past them"
    assert backend_state(commerce) == once


def test_an_address_change_is_confirmed_then_written_as_given(alice, commerce):
    assert "order number" in alice.reply("I need to change the delivery address of my order")
    assert "new delivery address" in alice.reply("1000002")
    assert "email address or the ZIP code" in alice.reply("22 Baker Street, Springfield, 94110, US")
    question = alice.reply("94107")
    assert "22 Baker Street, Springfield, 94110, US" in question and "yes or no" in question
    assert "Springfield, 94110" in alice.reply("yes")
    [row] = query(commerce, "SELECT shipping_address FROM commerce.orders WHERE order_number = '1000002'")
    address = json.loads(row["shipping_address"])
    assert (address["lines"], address["city"], address["zip"], address["country"]) == (
        ["22 Baker Street"],
        "Springfield",
        "94110",
        "US",
    )
