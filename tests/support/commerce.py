"""The seeded shop the commerce tests run tools against, the orders they add, and one-call helpers."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from connectors.backends.commerce.seed import seed_commerce
from connectors.postgres import migrate
from connectors.protocols import Tool, ToolCall, ToolError

OrderLine = tuple[str, str, int, str]  # sku, name, quantity, unit price
_keys = itertools.count()


@asynccontextmanager
async def seeded_shop(
    dsn: str, orders: Iterable[tuple[str, str, str, list[OrderLine]]] = (), max_size: int = 8
) -> AsyncIterator[asyncpg.Pool]:
    """The migrated demo shop (seed 3) plus `orders` (number, customer, status, lines), on a UTC pool."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await seed_commerce(conn, customers=20, orders=60, seed=3)
        for number, customer, status, lines in orders:
            await add_order(conn, number, customer, status, lines)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, server_settings={"timezone": "UTC"})
    try:
        yield pool
    finally:
        await pool.close()


async def run(tools: dict[str, Tool], name: str, customer: str, key: str | None = None, **arguments: Any) -> Any:
    """One call; a write gets a fresh key unless one is given."""
    call = ToolCall(name, arguments, customer, key if key is not None else f"test-key-{next(_keys)}")
    return await tools[name].call(call)


async def refused(tools: dict[str, Tool], name: str, customer: str, **arguments: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run(tools, name, customer, **arguments)
    return caught.value


async def add_order(conn: asyncpg.Connection, number: str, customer: str, status: str, lines: list[OrderLine]) -> None:
    """A captured order delivered two days ago (or not yet, by its status)."""
    now = datetime.now(UTC)
    total = sum((Decimal(price) * qty for _, _, qty, price in lines), Decimal(0))
    address = json.dumps(
        {"name": "Alice Martin", "lines": ["1 Main St"], "city": "SF", "zip": "94107", "country": "US"}
    )
    await conn.execute(
        "INSERT INTO commerce.orders VALUES ($1, $2, $3, 'EUR', $4, $5::jsonb, $6, $6)",
        number, customer, status, total, address, now - timedelta(days=4),
    )  # fmt: skip
    for sku, name, qty, price in lines:
        await conn.execute("INSERT INTO commerce.order_items VALUES ($1, $2, $3, $4, $5)", number, sku, name, qty,
                           Decimal(price))  # fmt: skip
    delivered = now - timedelta(days=2) if status == "delivered" else None
    await conn.execute(
        "INSERT INTO commerce.shipments VALUES ($1, $2, 'UPS', $3, $4, $5, $6, $7)",
        f"SH{number}", number, f"1Z{number}", "delivered" if delivered else "in_transit",
        now - timedelta(days=3), (now + timedelta(days=1)).date(), delivered,
    )  # fmt: skip
    method = await conn.fetchval(
        "SELECT payment_method_id FROM commerce.payment_methods WHERE customer_id = $1", customer
    )
    await conn.execute(
        "INSERT INTO commerce.payments VALUES ($1, $2, $3, $4, 'captured', $5)",
        f"PY{number}", number, method, total, now - timedelta(days=4),
    )  # fmt: skip
