"""The tool registry: commerce tools on a real PostgreSQL, writes recorded in the webhook outbox on a real broker."""

from __future__ import annotations

import asyncpg

from connectors.backends.registry import ToolRegistry
from connectors.kafka import TopicPlan, create_topics
from connectors.protocols import ToolCall
from pipelines.runtime.settings import Settings
from schemas import WebhookEvent
from tests.support.http_recorder import serve
from tests.support.stream import read_topics

SECRET = "a-webhook-secret-of-some-length"


async def test_a_refund_is_made_once_and_recorded_in_the_outbox_with_its_key_as_the_delivery_id(commerce_dsn, broker):
    postgres_dsn = commerce_dsn
    create_topics({"bootstrap.servers": broker.bootstrap}, [TopicPlan("sf.webhooks", 4)])
    with serve() as receiver:
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_exact_offsets=True,
            database_url=postgres_dsn,
            webhooks=[{"url": f"{receiver.url}/hooks", "secret": SECRET, "events": ["refund.*"]}],
        )
        registry = ToolRegistry.from_settings(settings)
        try:
            refund = await registry.get("payments.refund")
            assert refund is not None and refund.writes
            arguments = {"order_number": "1000004", "items": "1 socks", "currency": "EUR", "reason": "test"}
            call = ToolCall("payments.refund", arguments, "C000001", "k-registry-1")
            first, replayed = await refund.call(call), await refund.call(call)
            lookup = await registry.get("orders.get_order")
            assert lookup is not None and not lookup.writes
            await lookup.call(ToolCall("orders.get_order", {"order_number": "1000004"}, "C000001", "k-read"))
        finally:
            await registry.close()
        assert receiver.requests == [], "the worker only records: the deliverer (senders' process) POSTs"
    assert first == replayed, "the replay returns the stored result"
    records = read_topics(broker.bootstrap, ["sf.webhooks"], until=lambda rs: len(rs) >= 2, timeout_s=30)
    events = [WebhookEvent.model_validate_json(r.value) for r in records]
    assert [(e.delivery_id, e.event_type) for e in events] == [("k-registry-1", "refund.created")] * 2
    assert {r.key for r in records} == {b"C000001"}, "keyed by customer: one customer's events in order"
    assert events[0].data["result"] == first and events[0].data["arguments"] == arguments
    conn = await asyncpg.connect(postgres_dsn)
    try:
        made = await conn.fetchval("SELECT count(*) FROM commerce.refunds WHERE idempotency_key = 'k-registry-1'")
    finally:
        await conn.close()
    assert made == 1


async def test_without_a_database_the_commerce_tools_are_absent_not_crashing():
    registry = ToolRegistry.from_settings(Settings())
    try:
        assert await registry.get("payments.refund") is None
    finally:
        await registry.close()


async def test_the_identity_lockout_thresholds_come_from_the_settings(commerce_dsn):
    settings = Settings(database_url=commerce_dsn, identity_max_failures_per_customer=2, identity_lockout_hours=0.5)
    registry = ToolRegistry.from_settings(settings)
    try:
        verify = await registry.get("crm.verify_identity")
        assert verify is not None
        answers = [
            await verify.call(ToolCall("crm.verify_identity", {"order_number": "1000001", "zip": zip_}, "C000001", "k"))
            for zip_ in ("00001", "00002", "94107")
        ]
        assert answers[0] == {"verified": False} and answers[1]["locked"] and answers[2]["locked"]
    finally:
        await registry.close()


async def test_a_connection_back_in_the_pool_holds_no_lock_and_no_transaction(commerce_dsn):
    registry = ToolRegistry(database_url=commerce_dsn, pool_size=1)  # every call on the same connection
    try:
        verify = await registry.get("crm.verify_identity")
        get_order = await registry.get("orders.get_order")
        assert verify is not None and get_order is not None
        for zip_ in ("00001", "94107"):  # a failed check writes and locks; a good one clears
            await verify.call(ToolCall("crm.verify_identity", {"order_number": "1000001", "zip": zip_}, "C000001", "k"))
        order = await get_order.call(ToolCall("orders.get_order", {"order_number": "1000001"}, "C000001", "k2"))
        assert order["order_number"] == "1000001"

        conn = await asyncpg.connect(commerce_dsn)
        try:
            mine = await conn.fetchval("SELECT pg_backend_pid()")
            locks = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> $1", mine)
            states = await conn.fetch(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> $1 "
                "AND backend_type = 'client backend'",
                mine,
            )
        finally:
            await conn.close()
        assert locks == 0
        assert [r["state"] for r in states] == ["idle"], "the pool's connection is idle, not idle in transaction"
    finally:
        await registry.close()
