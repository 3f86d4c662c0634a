"""The tool registry: commerce tools on a real PostgreSQL, writes announced to a real webhook receiver."""

from __future__ import annotations

import json

import asyncpg

from connectors.backends.registry import ToolRegistry
from connectors.protocols import ToolCall
from pipelines.runtime.settings import Settings
from tests.support.http_recorder import serve

SECRET = "a-webhook-secret-of-some-length"


async def test_a_refund_is_made_once_and_announced_with_its_key_as_the_delivery_id(commerce_dsn, broker):
    postgres_dsn = commerce_dsn
    with serve() as receiver:
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap,
            database_url=postgres_dsn,
            webhooks=[{"url": f"{receiver.url}/hooks", "secret": SECRET, "events": ["refund.*"]}],
        )
        registry = ToolRegistry.from_settings(settings)
        try:
            refund = await registry.get("payments.refund")
            assert refund is not None and refund.writes
            arguments = {"order_number": "1000004", "amount": "10.00", "currency": "EUR", "reason": "test"}
            call = ToolCall("payments.refund", arguments, "C000001", "k-registry-1")
            first, replayed = await refund.call(call), await refund.call(call)
            lookup = await registry.get("orders.get_order")
            assert lookup is not None and not lookup.writes
            await lookup.call(ToolCall("orders.get_order", {"order_number": "1000004"}, "C000001", "k-read"))
        finally:
            await registry.close()  # waits for the deliveries in flight
        deliveries = receiver.to("/hooks")
    assert first == replayed, "the replay returns the stored result"
    assert [d.headers["x-supportflow-delivery"] for d in deliveries] == ["k-registry-1"] * 2
    assert {json.loads(d.body)["type"] for d in deliveries} == {"refund.created"}, "reads are not announced"
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
