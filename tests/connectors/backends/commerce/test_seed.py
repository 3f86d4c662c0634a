"""The commerce seed against a real PostgreSQL: realistic, deterministic, idempotent; and `supportflow seed`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from typer.testing import CliRunner

from connectors.backends.commerce.seed import (
    KNOWN_CUSTOMERS,
    KNOWN_ORDER_COUNT,
    ORDER_STATUSES,
    generate,
    seed_commerce,
)
from connectors.postgres import migrate
from pipelines.cli import app

NOW = datetime(2026, 3, 1, tzinfo=UTC)
TABLES = [
    "customers",
    "addresses",
    "payment_methods",
    "products",
    "orders",
    "order_items",
    "shipments",
    "payments",
    "refunds",
    "invoices",
    "subscriptions",
    "returns",
    "cases",
    "notes",
    "action_log",
]

runner = CliRunner()


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    return conn


async def dump(conn: asyncpg.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every commerce table, sorted, as tuples: equal dumps mean equal data."""
    return {t: sorted(map(tuple, await conn.fetch(f"SELECT * FROM commerce.{t}")), key=repr) for t in TABLES}


async def test_seed_writes_the_requested_counts_quickly_and_every_status(postgres_dsn):
    conn = await connect(postgres_dsn)
    try:
        started = time.perf_counter()
        counts = await seed_commerce(conn, customers=2000, orders=6000, seed=7, now=NOW)
        elapsed = time.perf_counter() - started
        assert counts["customers"] == 2000 and counts["orders"] == 6000
        assert elapsed < 30, f"seeding took {elapsed:.1f}s"
        statuses = {r["status"]: r["n"] for r in await conn.fetch(_BY_STATUS)}
        assert set(statuses) == set(ORDER_STATUSES)
        assert statuses["delivered"] > statuses["pending"]
    finally:
        await conn.close()


_BY_STATUS = "SELECT status, count(*) AS n FROM commerce.orders GROUP BY status"


async def test_seed_has_orders_in_every_status(postgres_dsn):
    conn = await connect(postgres_dsn)
    try:
        # the smallest seed: the well-known orders alone cover every status
        await seed_commerce(conn, customers=2, orders=KNOWN_ORDER_COUNT, now=NOW)
        assert {r["status"] for r in await conn.fetch(_BY_STATUS)} == set(ORDER_STATUSES)
        await seed_commerce(conn, customers=50, orders=100, now=NOW, reset=True)
        assert {r["status"] for r in await conn.fetch(_BY_STATUS)} == set(ORDER_STATUSES)
    finally:
        await conn.close()


async def test_seed_rows_are_consistent_with_order_status(postgres_dsn):
    conn = await connect(postgres_dsn)
    try:
        await seed_commerce(conn, customers=300, orders=1000, now=NOW)
        # shipped, delivered and returned orders have a tracking number; delivered ones a delivery time
        missing = await conn.fetchval(
            "SELECT count(*) FROM commerce.orders o LEFT JOIN commerce.shipments s USING (order_number) "
            "WHERE o.status IN ('shipped', 'delivered', 'returned') AND s.tracking_number IS NULL"
        )
        assert missing == 0
        undelivered = await conn.fetchval(
            "SELECT count(*) FROM commerce.orders o JOIN commerce.shipments s USING (order_number) "
            "WHERE o.status = 'delivered' AND (s.delivered_at IS NULL OR s.delivered_at < o.placed_at)"
        )
        assert undelivered == 0
        # pending orders are not paid yet; every other order has exactly one payment
        paid_pending = await conn.fetchval(
            "SELECT count(*) FROM commerce.payments JOIN commerce.orders o USING (order_number) "
            "WHERE o.status = 'pending'"
        )
        assert paid_pending == 0
        # totals are the sum of the items
        wrong_totals = await conn.fetchval(
            "SELECT count(*) FROM commerce.orders o WHERE o.total <> "
            "(SELECT sum(qty * unit_price) FROM commerce.order_items i WHERE i.order_number = o.order_number)"
        )
        assert wrong_totals == 0
        # refunds never exceed the captured amount
        over = await conn.fetchval(
            "SELECT count(*) FROM commerce.payments p WHERE p.amount < "
            "(SELECT coalesce(sum(amount), 0) FROM commerce.refunds r WHERE r.payment_id = p.payment_id)"
        )
        assert over == 0
        for table in ("refunds", "invoices", "subscriptions", "returns"):
            assert await conn.fetchval(f"SELECT count(*) FROM commerce.{table}") > 0, table
        methods = await conn.fetch("SELECT customer_id, count(*) AS n FROM commerce.payment_methods GROUP BY 1")
        assert {r["n"] for r in methods} <= {1, 2}
        assert await conn.fetchval("SELECT count(*) FROM commerce.orders WHERE order_number !~ '^[0-9]{7}$'") == 0
    finally:
        await conn.close()


async def test_seed_is_deterministic(postgres_dsn):
    conn = await connect(postgres_dsn)
    try:
        await seed_commerce(conn, customers=200, orders=600, seed=11, now=NOW)
        first = await dump(conn)
        await seed_commerce(conn, customers=200, orders=600, seed=11, now=NOW, reset=True)
        assert await dump(conn) == first
        await seed_commerce(conn, customers=200, orders=600, seed=12, now=NOW, reset=True)
        assert await dump(conn) != first
    finally:
        await conn.close()
    assert generate(50, 100, seed=3, now=NOW) == generate(50, 100, seed=3, now=NOW)


async def test_seeding_twice_without_reset_changes_nothing(postgres_dsn):
    conn = await connect(postgres_dsn)
    try:
        await seed_commerce(conn, customers=100, orders=300, now=NOW)
        first = await dump(conn)
        counts = await seed_commerce(conn, customers=100, orders=300, now=NOW)
        assert await dump(conn) == first
        assert counts["orders"] == 300 and counts["customers"] == 100
    finally:
        await conn.close()


async def test_every_seed_writes_the_well_known_customers(postgres_dsn):
    conn = await connect(postgres_dsn)
    try:
        await seed_commerce(conn, customers=20, orders=40, seed=99, now=NOW)
        alice = await conn.fetchrow("SELECT * FROM commerce.customers WHERE customer_id = 'C000001'")
        assert (alice["name"], alice["email"], alice["zip"]) == ("Alice Martin", "alice@example.com", "94107")
        orders = {
            r["order_number"]: r
            for r in await conn.fetch("SELECT * FROM commerce.orders WHERE customer_id = 'C000001'")
        }
        assert {n: r["status"] for n, r in orders.items()} == {
            "1000001": "pending",
            "1000002": "processing",
            "1000003": "shipped",
            "1000004": "delivered",
            "1000005": "delivered",
        }
        assert (orders["1000004"]["total"], orders["1000004"]["currency"]) == (Decimal("59.90"), "EUR")
        tracking = await conn.fetchval("SELECT tracking_number FROM commerce.shipments WHERE order_number = '1000003'")
        assert tracking == "1Z999AA10123456784"
        paid = await conn.fetchrow("SELECT amount, status FROM commerce.payments WHERE order_number = '1000004'")
        assert (paid["amount"], paid["status"]) == (Decimal("59.90"), "captured")
        bob = {
            r["order_number"]
            for r in await conn.fetch("SELECT order_number FROM commerce.orders WHERE customer_id = 'C000002'")
        }
        assert bob == {o.number for o in KNOWN_CUSTOMERS["C000002"].orders}
    finally:
        await conn.close()


async def _count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM commerce.{table}")
    finally:
        await conn.close()


def test_seed_command_migrates_seeds_and_reports_counts(postgres_dsn):
    import asyncio

    env = {"DATABASE_URL": postgres_dsn}
    result = runner.invoke(app, ["seed", "--customers", "120", "--orders", "400", "--seed", "5"], env=env)
    assert result.exit_code == 0, result.output
    assert "120 customers, 400 orders" in result.output
    assert asyncio.run(_count(postgres_dsn, "orders")) == 400
    again = runner.invoke(app, ["seed", "--customers", "30", "--orders", "60", "--reset"], env=env)
    assert again.exit_code == 0, again.output
    assert asyncio.run(_count(postgres_dsn, "customers")) == 30


def test_seed_command_refuses_bad_arguments_with_exit_code_2(postgres_dsn):
    env = {"DATABASE_URL": postgres_dsn}
    too_few = runner.invoke(app, ["seed", "--customers", "1"], env=env)
    assert too_few.exit_code == 2
    assert "--customers" in too_few.output
    no_owner = runner.invoke(app, ["seed", "--customers", "2", "--orders", "50"], env=env)
    assert no_owner.exit_code == 2
    assert "needs more than 2 customers" in no_owner.output
    not_a_number = runner.invoke(app, ["seed", "--orders", "many"], env=env)
    assert not_a_number.exit_code == 2
    assert "--orders" in not_a_number.output


def test_seed_help_explains_the_options():
    result = runner.invoke(app, ["seed", "--help"])
    assert result.exit_code == 0
    for option in ("--customers", "--orders", "--seed", "--reset"):
        assert option in result.output
