"""Changing items, returns and exchanges as the commerce backend enforces them, on a real PostgreSQL.

Alice (C000001): 1000001 pending (1 dripper, 34.00 EUR), 1000002 processing, 1000003 shipped,
1000004 delivered 5 days ago (2 x Merino wool socks, 59.90 EUR captured), 1000005 delivered 45
days ago. Added here: 1000009 delivered 2 days ago with trail running shoes (size 42, 119.00) and a
tent (249.00). Bob (C000002): 2000003 delivered 3 days ago (a skillet, 45.00 USD).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from connectors.backends.commerce import RefundPolicy, commerce_tools
from connectors.backends.commerce.orders import parse_item_changes
from connectors.protocols import Tool
from tests.support.commerce import refused, run, seeded_shop

ALICE, BOB = "C000001", "C000002"
SHOES = "1000009"
_keys = itertools.count()


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    lines = [("SHO-TRAI-42", "Trail running shoes", 1, "119.00"), ("OUT-TENT-2", "Two-person tent", 1, "249.00")]
    async with seeded_shop(postgres_dsn, [(SHOES, ALICE, "delivered", lines)], max_size=4) as pool:
        yield pool


@pytest.fixture
def tools(pool: asyncpg.Pool) -> dict[str, Tool]:
    return commerce_tools(pool)


async def snapshot(pool: asyncpg.Pool) -> list[list[tuple[Any, ...]]]:
    return [
        [tuple(r) for r in await pool.fetch(f"SELECT * FROM commerce.{name} ORDER BY 1")]
        for name in ("orders", "order_items", "payments", "refunds", "returns", "action_log")
    ]


# --- changing items of a pending order -----------------------------------------------------------------------


def test_one_line_of_item_changes_reads_as_adds_removals_and_new_quantities():
    assert parse_item_changes("add 2 mugs and remove the dripper") == [
        {"name": "mugs", "delta": 2},
        {"name": "the dripper", "qty": 0},
    ]
    assert parse_item_changes("please add a kettle, 2 mugs") == [
        {"name": "kettle", "delta": 1},
        {"name": "mugs", "delta": 2},
    ]
    assert parse_item_changes("kettle to 3; remove 1 mug") == [
        {"name": "kettle", "qty": 3},
        {"name": "mug", "delta": -1},
    ]
    assert parse_item_changes("2 x dripper") == [{"name": "dripper", "qty": 2}]
    with pytest.raises(ValueError, match="couldn't tell"):
        parse_item_changes("whatever you think")


async def test_the_quote_of_an_item_change_is_exactly_what_modify_items_then_does(tools, pool):
    before = await snapshot(pool)
    quote = await run(tools, "orders.quote_item_changes", ALICE, order_number="1000001",
                      changes="add 2 mugs and the dripper to 2")  # fmt: skip
    assert await snapshot(pool) == before, "a quote writes nothing"
    assert quote["changes_text"] == (
        "add 2 x Stoneware mugs (set of 4) (38.00 EUR each); Ceramic pour-over coffee dripper from 1 to 2"
    )
    assert (quote["total_before"], quote["total_after"], quote["difference"]) == ("34.00", "144.00", "110.00")

    done = await run(tools, "orders.modify_items", ALICE, order_number="1000001",
                     changes="add 2 mugs and the dripper to 2")  # fmt: skip
    assert done == quote
    rows = await pool.fetch("SELECT sku, qty FROM commerce.order_items WHERE order_number = '1000001' ORDER BY sku")
    assert [tuple(r) for r in rows] == [("KIT-DRIP-01", 2), ("KIT-MUGS-04", 2)]
    assert await pool.fetchval("SELECT total FROM commerce.orders WHERE order_number = '1000001'") == Decimal("144.00")


async def test_items_change_only_on_a_pending_order_and_only_items_that_exist(tools, pool):
    before = await snapshot(pool)
    for name in ("orders.quote_item_changes", "orders.modify_items"):
        error = await refused(tools, name, ALICE, order_number="1000002", changes="add 1 mug")
        assert error.kind == "not_allowed" and "being prepared" in error.message, name
        error = await refused(tools, name, ALICE, order_number="1000001", changes="remove the kettle")
        assert error.kind == "invalid" and "on order 1000001" in error.message, name
        error = await refused(tools, name, ALICE, order_number="1000001", changes="add a unicorn")
        assert error.kind == "invalid" and "'unicorn'" in error.message, name
        error = await refused(tools, name, ALICE, order_number="1000001", changes="add 1 linen")
        assert error.kind == "invalid" and "which one" in error.message, name  # the duvet cover or the pillowcases
        error = await refused(tools, name, ALICE, order_number="1000001", changes="remove the dripper")
        assert error.kind == "not_allowed" and "cancel the order instead" in error.message, name
        error = await refused(tools, name, ALICE, order_number="1000001", changes="remove 2 drippers")
        assert error.kind == "invalid" and "only 1" in error.message, name
    assert await snapshot(pool) == before


# --- returns -------------------------------------------------------------------------------------------------


async def test_a_return_registers_the_items_and_refunds_what_they_cost_once_per_key(tools, pool):
    quote = await run(tools, "orders.return_quote", ALICE, order_number="1000004", items="the socks")
    assert (quote["items_text"], quote["amount"], quote["needs_approval"]) == (
        "2 x Merino wool socks (3-pack)",
        "59.90",
        False,
    )

    done = await run(tools, "orders.create_return", ALICE, key="ret-1", order_number="1000004", items="the socks")
    assert done["return_id"].startswith("RT-") and done["items"] == [{"sku": "APP-SOCK-3", "qty": 2}]
    assert done["refund"]["amount"] == "59.90" and done["refund"]["payment_method"] == "Visa •••• 4242"
    assert await run(tools, "orders.create_return", ALICE, key="ret-1", order_number="1000004",
                     items="the socks") == done  # fmt: skip
    refunds = await pool.fetch("SELECT amount, automatic, reason FROM commerce.refunds WHERE order_number = '1000004'")
    assert [(r["amount"], r["automatic"]) for r in refunds] == [(Decimal("59.90"), True)]
    assert done["return_id"] in refunds[0]["reason"]

    for name in ("orders.return_quote", "orders.create_return"):
        error = await refused(tools, name, ALICE, order_number="1000004", items="1 socks")
        assert error.kind == "not_allowed" and "already been returned" in error.message, name
    error = await refused(tools, "payments.refund", ALICE, order_number="1000004", items="socks", reason="again")
    assert error.kind == "not_allowed" and "already been refunded" in error.message


async def test_a_return_outside_the_window_or_of_an_undelivered_order_is_refused_and_writes_nothing(tools, pool):
    before = await snapshot(pool)
    for name in ("orders.return_quote", "orders.create_return"):
        error = await refused(tools, name, ALICE, order_number="1000005", items="all")
        assert error.kind == "not_allowed" and "30-day return window closed" in error.message, name
        error = await refused(tools, name, ALICE, order_number="1000003", items="all")
        assert error.kind == "not_allowed" and "not delivered" in error.message, name
        error = await refused(tools, name, ALICE, order_number="1000001", items="all")
        assert error.kind == "not_allowed" and "cancelled or changed instead" in error.message, name
    later = commerce_tools(pool, refund_policy=RefundPolicy(clock=lambda: datetime.now(UTC) + timedelta(days=26)))
    error = await refused(later, "orders.create_return", ALICE, order_number="1000004", items="socks")
    assert error.kind == "not_allowed" and "window closed" in error.message, "day 31 after delivery"
    assert await snapshot(pool) == before


async def test_a_return_whose_refund_passes_the_automatic_limit_needs_a_human_who_can_approve_it(tools, pool):
    before = await snapshot(pool)
    quote = await run(tools, "orders.return_quote", ALICE, order_number=SHOES, items="the tent")
    assert quote["amount"] == "249.00" and quote["needs_approval"] is True
    error = await refused(tools, "orders.create_return", ALICE, order_number=SHOES, items="the tent")
    assert error.kind == "needs_approval" and "100.00 EUR limit" in error.message
    assert await snapshot(pool) == before

    approved = await run(tools, "orders.create_return", ALICE, order_number=SHOES, items="the tent",
                         approved_by="workspace:sam")  # fmt: skip
    assert approved["refund"]["amount"] == "249.00"
    row = await pool.fetchrow("SELECT automatic, approved_by FROM commerce.refunds WHERE order_number = $1", SHOES)
    assert tuple(row) == (False, "workspace:sam")


async def test_an_item_refunded_without_a_return_can_be_neither_returned_nor_exchanged(tools):
    await run(tools, "payments.refund", BOB, order_number="2000003", items="skillet", reason="damaged")
    error = await refused(tools, "orders.create_return", BOB, order_number="2000003", items="skillet")
    assert error.kind == "not_allowed" and "already been" in error.message
    error = await refused(tools, "orders.create_exchange", BOB, order_number="2000003", items="skillet")
    assert error.kind == "not_allowed" and "already been exchanged" in error.message


# --- exchanges -----------------------------------------------------------------------------------------------


async def test_an_exchange_for_another_size_ships_a_free_replacement_order_and_moves_no_money(tools, pool):
    arguments = {"order_number": SHOES, "items": "the shoes", "replacement": "size 43"}
    quote = await run(tools, "orders.exchange_quote", ALICE, **arguments)
    assert (quote["items_text"], quote["replacement_text"]) == (
        "1 x Trail running shoes",
        "1 x Trail running shoes, size 43",
    )
    money_before = [
        await pool.fetch("SELECT * FROM commerce.payments"),
        await pool.fetch("SELECT * FROM commerce.refunds"),
    ]

    done = await run(tools, "orders.create_exchange", ALICE, key="ex-1", **arguments)
    assert done["replacement_order"] == "0100001" and done["kind"] == "exchange"
    assert await run(tools, "orders.create_exchange", ALICE, key="ex-1", **arguments) == done
    replacement = await run(tools, "orders.get_order", ALICE, order_number="0100001")
    assert (replacement["status"], replacement["total"]) == ("processing", "0.00")
    assert [(i["sku"], i["qty"]) for i in replacement["items"]] == [("SHO-TRAI-43", 1)]
    stored = await pool.fetchrow("SELECT kind, items, replacement_order FROM commerce.returns WHERE return_id = $1",
                                 done["return_id"])  # fmt: skip
    assert (stored["kind"], stored["replacement_order"]) == ("exchange", "0100001")
    assert await pool.fetchval("SELECT count(*) FROM commerce.orders WHERE customer_id = $1", ALICE) == 7
    assert [
        await pool.fetch("SELECT * FROM commerce.payments"),
        await pool.fetch("SELECT * FROM commerce.refunds"),
    ] == (money_before)
    error = await refused(tools, "orders.create_return", ALICE, order_number=SHOES, items="shoes")
    assert error.kind == "not_allowed" and "already been returned" in error.message


async def test_an_exchange_is_for_the_same_item_or_a_same_priced_variant_of_a_delivered_order(tools, pool):
    same = await run(
        tools, "orders.exchange_quote", ALICE, order_number="1000004", items="socks", replacement="the same"
    )
    assert same["replacement_text"] == "2 x Merino wool socks (3-pack)"
    await pool.execute("INSERT INTO commerce.products VALUES ('SHO-TRAI-45', 'Trail running shoes, size 45', 129)")
    before = await snapshot(pool)
    cases = [
        ({"order_number": SHOES, "items": "shoes", "replacement": "size 45"}, "not_allowed", "can't be an exchange"),
        ({"order_number": SHOES, "items": "shoes", "replacement": "size 50"}, "invalid", "size 43"),
        ({"order_number": SHOES, "items": "all", "replacement": "size 43"}, "invalid", "one item"),
        ({"order_number": "1000004", "items": "socks", "replacement": "large"}, "not_allowed", "no other variant"),
        ({"order_number": "1000003", "items": "shoes"}, "not_allowed", "cannot be exchanged: it is shipped"),
        ({"order_number": "1000005", "items": "all"}, "not_allowed", "return window closed"),
    ]
    for arguments, kind, words in cases:
        for name in ("orders.exchange_quote", "orders.create_exchange"):
            error = await refused(tools, name, ALICE, **arguments)
            assert error.kind == kind and words in error.message, (name, arguments, error.message)
    assert await snapshot(pool) == before
