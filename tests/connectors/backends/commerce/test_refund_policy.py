"""The refund policy as the commerce backend enforces it, against a real PostgreSQL.

Delivered orders only, for 30 days after delivery; the amount is what the named lines cost; the
agent's automatic refunds stay within 100 per order and per customer over 7 days, and above that
the refund is refused as `needs_approval` (a human's `approved_by` lifts it). Alice's 1000009 is a
large delivered order added here: 10 x Merino wool socks (29.95) and a tent (249.00).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from connectors.backends.commerce import RefundPolicy, commerce_tools
from connectors.protocols import Tool, ToolCall, ToolError
from tests.support.commerce import seeded_shop

ALICE, BOB = "C000001", "C000002"
BIG, SECOND_BIG = "1000009", "1000010"
LINES = [("APP-SOCK-3", "Merino wool socks (3-pack)", 10, "29.95"), ("OUT-TENT-2", "Two-person tent", 1, "249.00")]
_keys = itertools.count()


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    orders = [(number, ALICE, "delivered", LINES) for number in (BIG, SECOND_BIG)]
    async with seeded_shop(postgres_dsn, orders, max_size=10) as pool:
        yield pool


def tools_at(pool: asyncpg.Pool, clock: datetime | None = None) -> dict[str, Tool]:
    policy = RefundPolicy() if clock is None else RefundPolicy(clock=lambda: clock)
    return commerce_tools(pool, refund_policy=policy)


async def refund(tools: dict[str, Tool], customer: str, key: str | None = None, **arguments: Any) -> Any:
    """One refund; every call is a new request (a new key) unless a key is given."""
    arguments.setdefault("reason", "customer request")
    call = ToolCall("payments.refund", arguments, customer, key or f"refund-{next(_keys)}")
    return await tools["payments.refund"].call(call)


async def refused(tools: dict[str, Tool], customer: str, **arguments: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await refund(tools, customer, **arguments)
    return caught.value


async def refunded(pool: asyncpg.Pool, customer: str = ALICE) -> Decimal:
    return await pool.fetchval(
        "SELECT coalesce(sum(r.amount), 0) FROM commerce.refunds r JOIN commerce.orders o USING (order_number) "
        "WHERE o.customer_id = $1 AND r.automatic",
        customer,
    )


async def test_splitting_a_large_order_into_small_refunds_stops_at_the_cumulative_limit(pool):
    tools = tools_at(pool)
    for _ in range(3):  # 3 x 29.95 = 89.85: within the 100 EUR limit
        done = await refund(tools, ALICE, order_number=BIG, items="1 socks")
        assert done["amount"] == "29.95"
    error = await refused(tools, ALICE, order_number=BIG, items="1 socks")
    assert error.kind == "needs_approval"
    assert "89.85 EUR already refunded on this order" in error.message and "100.00 EUR limit" in error.message
    # another order of the same customer does not start a fresh allowance
    error = await refused(tools, ALICE, order_number=SECOND_BIG, items="1 socks")
    assert error.kind == "needs_approval"
    assert await refunded(pool) == Decimal("89.85")
    # a human's approval lifts the limit, and is not counted as an automatic refund
    approved = await refund(tools, ALICE, order_number=BIG, items="the tent", approved_by="workspace:sam")
    assert approved["amount"] == "249.00"
    row = await pool.fetchrow("SELECT automatic, approved_by FROM commerce.refunds WHERE refund_id = $1",
                              approved["refund_id"])  # fmt: skip
    assert tuple(row) == (False, "workspace:sam")
    assert await refunded(pool) == Decimal("89.85")


async def test_the_customer_window_is_rolling(pool):
    three = await refund(tools_at(pool), ALICE, order_number=BIG, items="3 socks")
    assert three["amount"] == "89.85"
    error = await refused(tools_at(pool), ALICE, order_number=SECOND_BIG, items="1 socks")
    assert error.kind == "needs_approval"
    # 8 days on the first refunds have left the 7-day window for the account, though not for their order
    later = tools_at(pool, datetime.now(UTC) + timedelta(days=8))
    assert (await refund(later, ALICE, order_number=SECOND_BIG, items="1 socks"))["amount"] == "29.95"
    assert (await refused(later, ALICE, order_number=BIG, items="1 socks")).kind == "needs_approval"


async def test_concurrent_refunds_cannot_together_pass_the_limit(pool):
    tools = tools_at(pool)
    outcomes = await asyncio.gather(
        *(refund(tools, ALICE, order_number=number, items="1 socks") for number in [BIG, SECOND_BIG] * 4),
        return_exceptions=True,
    )
    assert sum(isinstance(o, dict) for o in outcomes) == 3
    assert all(isinstance(o, ToolError) and o.kind == "needs_approval" for o in outcomes if not isinstance(o, dict))
    assert await refunded(pool) == Decimal("89.85")


async def test_a_refund_31_days_after_delivery_is_refused(pool):
    delivered = await pool.fetchval("SELECT max(delivered_at) FROM commerce.shipments WHERE order_number = '1000004'")
    late = tools_at(pool, delivered + timedelta(days=31))
    error = await refused(late, ALICE, order_number="1000004", items="1 socks")
    assert error.kind == "not_allowed" and "30 days after delivery" in error.message
    assert await pool.fetchval("SELECT count(*) FROM commerce.refunds WHERE order_number = '1000004'") == 0
    in_time = tools_at(pool, delivered + timedelta(days=29))
    assert (await refund(in_time, ALICE, order_number="1000004", items="1 socks"))["amount"] == "29.95"
    # the seed's 1000005 was delivered 45 days ago
    error = await refused(tools_at(pool), ALICE, order_number="1000005", items="all")
    assert error.kind == "not_allowed" and "window closed" in error.message


@pytest.mark.parametrize(
    ("customer", "order", "words"),
    [
        (ALICE, "1000001", "not shipped yet"),  # pending
        (ALICE, "1000002", "not shipped yet"),  # processing, paid
        (ALICE, "1000003", "once it is delivered"),  # shipped
        (BOB, "2000004", "it is cancelled"),
        (BOB, "2000005", "it has been returned"),
    ],
)
async def test_an_order_not_delivered_is_refused_per_the_policy(pool, customer, order, words):
    before = await pool.fetchval("SELECT count(*) FROM commerce.refunds")
    error = await refused(tools_at(pool), customer, order_number=order, items="all")
    assert error.kind == "not_allowed" and words in error.message
    quote = ToolCall("payments.refund_quote", {"order_number": order}, customer, "")
    with pytest.raises(ToolError) as caught:
        await tools_at(pool)["payments.refund_quote"].call(quote)
    assert caught.value.message == error.message
    assert await pool.fetchval("SELECT count(*) FROM commerce.refunds") == before


async def test_the_amount_comes_from_the_items_named(pool):
    tools = tools_at(pool)
    quote = await tools["payments.refund_quote"].call(
        ToolCall("payments.refund_quote", {"order_number": BIG, "items": "2 socks"}, ALICE, "")
    )
    assert quote["amount"] == "59.90" and quote["items_text"] == "2 x Merino wool socks (3-pack)"
    assert quote["needs_approval"] is False and quote["limit"] == "100.00"
    # a typed figure is only the customer's expectation: it must match, it never sets the amount
    error = await refused(tools, ALICE, order_number=BIG, items="2 socks", amount="5.00")
    assert error.kind == "invalid" and "come to 59.90 EUR, not 5.00" in error.message
    done = await refund(tools, ALICE, order_number=BIG, items=[{"sku": "app-sock-3", "qty": 2}], amount="59.90")
    assert done["amount"] == "59.90" and done["items"][0]["qty"] == 2
    error = await refused(tools, ALICE, order_number=BIG, items="the kettle")
    assert error.kind == "invalid" and "no item 'the kettle'" in error.message and "Two-person tent" in error.message
    quote = await tools["payments.refund_quote"].call(
        ToolCall("payments.refund_quote", {"order_number": BIG, "items": "all"}, ALICE, "")
    )
    # what is left: 8 socks and the tent, above the limit with what was refunded before
    assert quote["amount"] == "488.60" and quote["needs_approval"] is True
    assert quote["refunded_automatically"] == {"order": "59.90", "customer": "59.90"}
