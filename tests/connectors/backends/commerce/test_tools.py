"""The commerce tools against a real PostgreSQL seeded with the well-known customers.

Alice (C000001): 1000001 pending, 1000002 processing (128.00 EUR captured), 1000003 shipped,
1000004 delivered 5 days ago (59.90 EUR), 1000005 delivered 45 days ago. Bob (C000002): 2000001
pending, 2000002 shipped, 2000003 delivered 3 days ago (45.00 USD), 2000004 cancelled,
2000005 returned.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from connectors.backends.commerce import commerce_tools
from connectors.protocols import Tool, ToolCall, ToolError
from tests.support.commerce import refused, run, seeded_shop

ALICE, BOB = "C000001", "C000002"
UNKNOWN_ORDER = "0000001"  # seeded order numbers start at 1000001
_keys = itertools.count()


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with seeded_shop(postgres_dsn) as pool:
        yield pool


@pytest.fixture
def tools(pool: asyncpg.Pool) -> dict[str, Tool]:
    return commerce_tools(pool)


async def table(pool: asyncpg.Pool, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await pool.fetch(sql, *args)]


async def snapshot(pool: asyncpg.Pool) -> list[list[tuple[Any, ...]]]:
    """Everything a write could change."""
    return [
        await table(pool, f"SELECT * FROM commerce.{name} ORDER BY 1")
        for name in ("orders", "order_items", "payments", "refunds", "returns", "cases", "notes", "action_log")
    ]


def test_every_tool_satisfies_the_protocol(tools):
    writes = {name for name, tool in tools.items() if tool.writes}
    assert writes == {
        "crm.add_note",
        "crm.create_case",
        "orders.cancel_order",
        "orders.change_address",
        "orders.modify_items",
        "orders.create_return",
        "orders.create_exchange",
        "payments.refund",
    }
    for name, tool in tools.items():
        assert isinstance(tool.name, str) and tool.name == name
        assert tool.description and callable(tool.call)


async def test_lookup_customer_returns_the_callers_record_with_a_masked_email(tools):
    alice = await run(tools, "crm.lookup_customer", ALICE)
    assert alice["name"] == "Alice Martin" and alice["tier"] == "gold" and alice["city"] == "San Francisco"
    assert alice["email"] == "a***@example.com"
    error = await refused(tools, "crm.lookup_customer", "C999999")
    assert error.kind == "not_found"
    error = await refused(tools, "crm.lookup_customer", ALICE, customer_id=BOB)
    assert error.kind == "invalid" and "customer_id" in error.message


async def test_verify_identity_needs_order_and_matching_email_or_zip(tools):
    async def verified(customer: str, **arguments: Any) -> bool:
        return (await run(tools, "crm.verify_identity", customer, **arguments))["verified"]

    assert await verified(ALICE, order_number="1000003", email="alice@example.com")
    assert await verified(ALICE, order_number="1000003", email=" Alice@Example.com ")
    assert await verified(ALICE, order_number="1000003", zip="94107")
    assert await verified(BOB, order_number=2000001, zip="10001")
    # each missing or wrong part gives the same bare answer
    assert not await verified(ALICE, order_number="1000003", email="bob@example.com")
    assert not await verified(ALICE, order_number="1000003", zip="10001")
    assert not await verified(ALICE, order_number="2000001", email="alice@example.com")  # Bob's order
    assert not await verified(ALICE, order_number=UNKNOWN_ORDER, zip="94107")
    assert not await verified(ALICE, order_number="1000003", email="alice@example.com", zip="00000")
    assert not await verified(BOB, order_number="1000003", email="alice@example.com")
    # Bob, not Alice: her five misses above are the lockout's threshold (test_crm.py), which says more
    result = await run(tools, "crm.verify_identity", BOB, order_number="2000001", zip="1")
    assert result == {"verified": False}
    error = await refused(tools, "crm.verify_identity", ALICE, order_number="1000003")
    assert error.kind == "invalid" and "email" in error.message and "ZIP" in error.message


ORDER_TOOLS: list[tuple[str, dict[str, Any]]] = [
    ("orders.get_order", {}),
    ("orders.cancel_order", {}),
    ("orders.change_address", {"address": {"lines": ["1 Main St"], "city": "Austin", "zip": "78701", "country": "US"}}),
    ("orders.modify_items", {"changes": [{"sku": "KIT-MUGS-04", "qty": 1}]}),
    ("orders.quote_item_changes", {"changes": "add 1 mug"}),
    ("orders.create_return", {"items": "all"}),
    ("orders.return_quote", {"items": "all"}),
    ("orders.create_exchange", {"items": "all"}),
    ("orders.exchange_quote", {"items": "all"}),
    ("payments.refund", {"items": "all", "reason": "goodwill"}),
    ("payments.refund_quote", {"items": "all"}),
    ("payments.refund_status", {}),
    ("payments.payment_status", {}),
]


@pytest.mark.parametrize(("name", "extra"), ORDER_TOOLS, ids=[name for name, _ in ORDER_TOOLS])
async def test_another_customers_order_is_not_found_and_reveals_nothing(tools, pool, name, extra):
    before = await snapshot(pool)
    for bobs_order in ("2000001", "2000003"):  # pending and delivered: every action applies to one of them
        foreign = await refused(tools, name, ALICE, order_number=bobs_order, **extra)
        unknown = await refused(tools, name, ALICE, order_number=UNKNOWN_ORDER, **extra)
        assert foreign.kind == unknown.kind == "not_found"
        assert foreign.message.replace(bobs_order, "#") == unknown.message.replace(UNKNOWN_ORDER, "#")
        assert "Bob" not in foreign.message and "2000001" not in foreign.message.replace(bobs_order, "")
    assert await snapshot(pool) == before


async def test_get_order_shows_items_totals_and_tracking(tools):
    shipped = await run(tools, "orders.get_order", ALICE, order_number="#1000003")
    assert shipped["status"] == "shipped" and shipped["currency"] == "EUR" and shipped["total"] == "119.00"
    assert shipped["items"] == [{"sku": "SHO-TRAI-42", "name": "Trail running shoes", "qty": 1, "unit_price": "119.00"}]
    assert shipped["shipment"]["carrier"] == "UPS"
    assert shipped["shipment"]["tracking_number"] == "1Z999AA10123456784"
    assert shipped["shipment"]["status"] == "in_transit" and shipped["shipment"]["eta"]
    assert shipped["shipping_address"]["city"] == "San Francisco"
    pending = await run(tools, "orders.get_order", ALICE, order_number=1000001)
    assert pending["status"] == "pending" and pending["shipment"] is None
    delivered = await run(tools, "orders.get_order", ALICE, order_number="1000004")
    assert delivered["total"] == "59.90" and delivered["shipment"]["delivered_at"]


async def test_list_orders_returns_the_callers_recent_orders_newest_first(tools):
    listed = (await run(tools, "orders.list_orders", ALICE))["orders"]
    assert [o["order_number"] for o in listed] == ["1000001", "1000002", "1000003", "1000004", "1000005"]
    assert listed[3] == {**listed[3], "status": "delivered", "total": "59.90", "currency": "EUR", "item_count": 2}
    two = (await run(tools, "orders.list_orders", BOB, limit=2))["orders"]
    assert [o["order_number"] for o in two] == ["2000001", "2000002"]
    assert (await refused(tools, "orders.list_orders", BOB, limit=0)).kind == "invalid"


async def test_cancel_processing_order_refunds_the_captured_payment_in_full(tools, pool):
    result = await run(tools, "orders.cancel_order", ALICE, order_number="1000002", reason="changed my mind")
    assert result["status"] == "cancelled"
    refund = result["refund"]
    assert refund["amount"] == "128.00" and refund["currency"] == "EUR"
    assert refund["payment_method"] == "Visa •••• 4242" and refund["payment_status"] == "refunded"
    assert await pool.fetchval("SELECT status FROM commerce.orders WHERE order_number = '1000002'") == "cancelled"
    assert await pool.fetchval("SELECT status FROM commerce.payments WHERE order_number = '1000002'") == "refunded"
    rows = await table(pool, "SELECT amount, status FROM commerce.refunds WHERE order_number = '1000002'")
    assert rows == [(Decimal("128.00"), "pending")]


async def test_cancel_pending_order_cancels_without_a_refund(tools, pool):
    result = await run(tools, "orders.cancel_order", ALICE, order_number="1000001")
    assert result == {"order_number": "1000001", "status": "cancelled", "refund": None}
    assert await pool.fetchval("SELECT count(*) FROM commerce.refunds WHERE order_number = '1000001'") == 0


@pytest.mark.parametrize(("order", "why"), [("1000003", "already shipped"), ("1000004", "already been delivered")])
async def test_cancel_shipped_order_is_refused_and_changes_nothing(tools, pool, order, why):
    before = await snapshot(pool)
    error = await refused(tools, "orders.cancel_order", ALICE, order_number=order)
    assert error.kind == "not_allowed" and why in error.message and order in error.message
    assert await snapshot(pool) == before  # not even an action_log row


async def test_cancel_twice_with_one_key_cancels_once(tools, pool):
    first = await run(tools, "orders.cancel_order", ALICE, key="turn-17", order_number="1000002")
    second = await run(tools, "orders.cancel_order", ALICE, key="turn-17", order_number="1000002")
    assert second == first
    assert await pool.fetchval("SELECT count(*) FROM commerce.refunds WHERE order_number = '1000002'") == 1
    assert await pool.fetchval("SELECT count(*) FROM commerce.action_log") == 1
    # a new key is a new request, judged on the order as it now is
    error = await refused(tools, "orders.cancel_order", ALICE, order_number="1000002")
    assert error.kind == "not_allowed" and "already cancelled" in error.message


async def test_refund_twice_with_one_key_creates_one_refund(tools, pool):
    args = {"order_number": "1000004", "items": "1 socks", "reason": "late delivery"}
    first = await run(tools, "payments.refund", ALICE, key="turn-42", **args)
    second = await run(tools, "payments.refund", ALICE, key="turn-42", **args)
    assert second == first
    assert first["amount"] == "29.95" and first["refundable_left"] == "29.95"
    assert first["payment_status"] == "partially_refunded" and first["payment_method"] == "Visa •••• 4242"
    assert await pool.fetchval("SELECT count(*) FROM commerce.refunds WHERE order_number = '1000004'") == 1
    logged = await pool.fetchrow("SELECT tool, customer_id FROM commerce.action_log WHERE idempotency_key = 'turn-42'")
    assert tuple(logged) == ("payments.refund", ALICE)


async def test_concurrent_refunds_with_one_key_create_one_refund(tools, pool):
    args = {"order_number": "2000003", "items": [{"sku": "KIT-SKIL-10"}], "reason": "scratched"}
    results = await asyncio.gather(*(run(tools, "payments.refund", BOB, key="turn-9", **args) for _ in range(6)))
    assert all(r == results[0] for r in results)
    assert await pool.fetchval("SELECT count(*) FROM commerce.refunds WHERE order_number = '2000003'") == 1
    assert await pool.fetchval("SELECT status FROM commerce.payments WHERE order_number = '2000003'") == "refunded"


async def test_concurrent_refunds_with_different_keys_never_exceed_what_was_captured(tools, pool):
    args = {"order_number": "2000003", "items": "the skillet", "reason": "goodwill"}  # one 45.00 line, captured
    outcomes = await asyncio.gather(
        *(run(tools, "payments.refund", BOB, **args) for _ in range(6)), return_exceptions=True
    )
    assert sum(isinstance(o, dict) for o in outcomes) == 1
    assert all(o.kind == "not_allowed" for o in outcomes if isinstance(o, ToolError))
    assert await pool.fetchval("SELECT sum(amount) FROM commerce.refunds WHERE order_number = '2000003'") == 45


async def test_refund_is_limited_to_the_lines_not_yet_refunded_and_updates_the_payment(tools, pool):
    # 1000004: 2 x Merino wool socks at 29.95, 59.90 EUR captured
    error = await refused(tools, "payments.refund", ALICE, order_number="1000004", items="3 socks", reason="x")
    assert error.kind == "not_allowed" and "Only 2 of Merino wool socks" in error.message
    await run(tools, "payments.refund", ALICE, order_number="1000004", items="1 socks", reason="damaged box")
    error = await refused(tools, "payments.refund", ALICE, order_number="1000004", items="2 socks", reason="x")
    assert error.kind == "not_allowed" and "Only 1 of Merino wool socks" in error.message
    last = await run(tools, "payments.refund", ALICE, order_number="1000004", items="all", reason="returned")
    assert last["amount"] == "29.95" and last["payment_status"] == "refunded" and last["refundable_left"] == "0.00"
    error = await refused(tools, "payments.refund", ALICE, order_number="1000004", items="all", reason="x")
    assert error.kind == "not_allowed" and "already been refunded" in error.message
    error = await refused(tools, "payments.refund", ALICE, order_number="1000001", items="all", reason="x")
    assert error.kind == "not_allowed"  # pending: nothing captured yet
    status = await run(tools, "payments.refund_status", ALICE, order_number="1000004")
    assert status["refunded_total"] == "59.90" and [r["amount"] for r in status["refunds"]] == ["29.95", "29.95"]
    assert all(r["status"] == "pending" and r["payment_method"] == "Visa •••• 4242" for r in status["refunds"])


async def test_payment_status_of_paid_pending_and_refunded_orders(tools):
    paid = await run(tools, "payments.payment_status", ALICE, order_number="1000004")
    assert paid == {**paid, "status": "captured", "amount": "59.90", "currency": "EUR", "refunded": "0.00"}
    assert paid["payment_method"] == "Visa •••• 4242" and paid["captured_at"]
    pending = await run(tools, "payments.payment_status", ALICE, order_number="1000001")
    assert pending["status"] == "awaiting_capture" and pending["payment_method"] is None
    cancelled = await run(tools, "payments.payment_status", BOB, order_number="2000004")
    assert cancelled["status"] == "refunded" and cancelled["refunded"] == cancelled["amount"]
    seeded = await run(tools, "payments.refund_status", BOB, order_number="2000005")
    assert [r["status"] for r in seeded["refunds"]] == ["succeeded"]


async def test_change_address_only_before_shipping(tools, pool):
    address = {"lines": ["1 Infinite Loop"], "city": "Cupertino", "zip": "95014", "country": "us"}
    result = await run(tools, "orders.change_address", ALICE, order_number="1000002", address=address)
    assert result["shipping_address"] == {**address, "country": "US", "name": "Alice Martin"}
    stored = await run(tools, "orders.get_order", ALICE, order_number="1000002")
    assert stored["shipping_address"]["city"] == "Cupertino"
    before = await snapshot(pool)
    error = await refused(tools, "orders.change_address", ALICE, order_number="1000003", address=address)
    assert error.kind == "not_allowed" and "already shipped" in error.message
    assert await snapshot(pool) == before
    error = await refused(tools, "orders.change_address", ALICE, order_number="1000002", address={"city": "X"})
    assert error.kind == "invalid" and "address.lines" in error.message


async def test_modify_items_recomputes_the_total_on_pending_orders_only(tools, pool):
    result = await run(
        tools,
        "orders.modify_items",
        ALICE,
        order_number="1000001",
        changes=[{"sku": "KIT-DRIP-01", "qty": 2}, {"sku": "kit-bean-01", "qty": 1}],
    )
    assert result["total"] == "100.90"  # 2 x 34.00 + 32.90
    assert {i["sku"]: i["qty"] for i in result["items"]} == {"KIT-DRIP-01": 2, "KIT-BEAN-01": 1}
    assert await pool.fetchval("SELECT total FROM commerce.orders WHERE order_number = '1000001'") == Decimal("100.90")
    removed = await run(
        tools, "orders.modify_items", ALICE, order_number="1000001", changes=[{"sku": "KIT-DRIP-01", "qty": 0}]
    )
    assert removed["total"] == "32.90"
    before = await snapshot(pool)
    error = await refused(
        tools, "orders.modify_items", ALICE, order_number="1000001", changes=[{"sku": "KIT-BEAN-01", "qty": 0}]
    )
    assert error.kind == "not_allowed" and "cancel the order instead" in error.message
    error = await refused(
        tools, "orders.modify_items", ALICE, order_number="1000001", changes=[{"sku": "NOPE-1", "qty": 1}]
    )
    assert error.kind == "not_found" and "NOPE-1" in error.message
    error = await refused(
        tools, "orders.modify_items", ALICE, order_number="1000002", changes=[{"sku": "HOM-PILW-2", "qty": 2}]
    )
    assert error.kind == "not_allowed" and "being prepared" in error.message
    assert await snapshot(pool) == before


async def test_create_return_within_30_days_of_delivery_only(tools, pool):
    created = await run(tools, "orders.create_exchange", ALICE, order_number="1000004", reason="too small")
    assert created["kind"] == "exchange" and created["status"] == "requested"
    assert created["items"] == [{"sku": "APP-SOCK-3", "name": "Merino wool socks (3-pack)", "qty": 2}]
    assert created["return_id"].startswith("RT-")
    error = await refused(tools, "orders.create_return", ALICE, order_number="1000004")
    assert error.kind == "not_allowed" and "already been returned" in error.message
    error = await refused(tools, "orders.create_return", ALICE, order_number="1000005")
    assert error.kind == "not_allowed" and "30-day return window closed" in error.message
    error = await refused(tools, "orders.create_return", ALICE, order_number="1000003")
    assert error.kind == "not_allowed" and "once it is delivered" in error.message
    error = await refused(
        tools, "orders.create_return", BOB, order_number="2000003", items=[{"sku": "KIT-SKIL-10", "qty": 2}]
    )
    assert error.kind == "not_allowed" and "Only 1" in error.message
    one = await run(tools, "orders.create_return", BOB, order_number="2000003", items=[{"sku": "KIT-SKIL-10"}])
    assert one["items"] == [{"sku": "KIT-SKIL-10", "qty": 1}] and one["kind"] == "return"
    assert one["refund"]["amount"] == "45.00"
    assert await pool.fetchval("SELECT count(*) FROM commerce.returns WHERE status = 'requested'") == 2


async def test_add_note_and_create_case_write_once_per_key(tools, pool):
    note = await run(tools, "crm.add_note", ALICE, key="n-1", text="Prefers SMS.")
    assert await run(tools, "crm.add_note", ALICE, key="n-1", text="Prefers SMS.") == note
    case_args = {"subject": "Parcel damaged", "description": "Box crushed", "priority": "high"}
    case = await run(tools, "crm.create_case", BOB, key="c-1", **case_args)
    assert case["case_id"].startswith("CS-") and case["status"] == "open" and case["priority"] == "high"
    assert await run(tools, "crm.create_case", BOB, key="c-1", **case_args) == case
    assert await pool.fetchval("SELECT count(*) FROM commerce.notes WHERE customer_id = $1", ALICE) == 1
    assert await pool.fetchval("SELECT count(*) FROM commerce.cases WHERE customer_id = $1", BOB) == 1
    error = await refused(tools, "crm.create_case", BOB, subject="x", description="y", priority="asap")
    assert error.kind == "invalid" and "priority" in error.message


async def test_a_key_used_by_another_customer_or_action_returns_nothing_of_theirs(tools, pool):
    mine = await run(tools, "payments.refund", BOB, key="shared", order_number="2000003", items="all", reason="x")
    error = await refused_with_key(
        tools, "payments.refund", ALICE, "shared", order_number="1000004", items="all", reason="x"
    )
    assert error.kind == "invalid" and "2000003" not in error.message and mine["refund_id"] not in error.message
    error = await refused_with_key(tools, "crm.add_note", BOB, "shared", text="hello")
    assert error.kind == "invalid"
    assert await pool.fetchval("SELECT count(*) FROM commerce.refunds WHERE idempotency_key = 'shared'") == 1


async def refused_with_key(tools: dict[str, Tool], name: str, customer: str, key: str, **arguments: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run(tools, name, customer, key=key, **arguments)
    return caught.value


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"order_number": "1000004", "amount": "ten", "reason": "x"}, "amount"),
        ({"order_number": "1000004", "amount": "-5", "reason": "x"}, "amount: Input should be greater than 0"),
        ({"order_number": "1000004", "amount": "1.999", "reason": "x"}, "decimal places"),
        ({"order_number": "1000004", "items": "all"}, "reason: Field required"),
        ({"order_number": "1000004", "items": [], "reason": "x"}, "items: List should have at least 1 item"),
        ({"order_number": "12345", "amount": "1", "reason": "x"}, "an order number has 7 digits"),
        ({"order_number": "1000004", "amount": "1", "reason": "x", "to_card": "4111"}, "to_card: Extra inputs"),
    ],
)
async def test_bad_arguments_are_invalid_with_a_clear_message(tools, pool, arguments, words):
    error = await refused(tools, "payments.refund", ALICE, **arguments)
    assert error.kind == "invalid" and words in error.message
    assert await pool.fetchval("SELECT count(*) FROM commerce.action_log") == 0


async def test_a_write_without_an_idempotency_key_is_invalid(tools):
    error = await refused_with_key(tools, "crm.add_note", ALICE, "", text="hello")
    assert error.kind == "invalid" and "idempotency key" in error.message


async def test_a_locked_or_unreachable_database_is_unavailable(pool, postgres_dsn):
    slow = commerce_tools(pool, timeout_s=0.5)
    blocker = await asyncpg.connect(postgres_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM commerce.orders WHERE order_number = '1000002' FOR UPDATE")
            with pytest.raises(ToolError) as caught:
                await slow["orders.cancel_order"].call(
                    ToolCall("orders.cancel_order", {"order_number": "1000002"}, ALICE, "k")
                )
            assert caught.value.kind == "unavailable"
    finally:
        await blocker.close()
    # the timed-out attempt left nothing behind: the same key now acts
    done = await slow["orders.cancel_order"].call(
        ToolCall("orders.cancel_order", {"order_number": "1000002"}, ALICE, "k")
    )
    assert done["status"] == "cancelled"
    await pool.close()
    with pytest.raises(ToolError) as caught:
        await slow["orders.get_order"].call(ToolCall("orders.get_order", {"order_number": "1000002"}, ALICE, ""))
    assert caught.value.kind == "unavailable"
