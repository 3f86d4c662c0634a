"""What every commerce tool shares: argument parsing, error mapping, the idempotent write path.

A write runs in ONE transaction that first claims `call.idempotency_key` in `commerce.action_log`
(`INSERT ... ON CONFLICT DO NOTHING`). A key already there means the action already happened (or
is happening in a concurrent transaction, which the insert waits for): the stored result is
returned and nothing is done again. A refused or failed action rolls back its claim with it, so
a retry is judged afresh.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, TypeVar

import asyncpg
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from connectors.protocols import ToolCall, ToolError

__all__ = [
    "CommerceTool",
    "NoArguments",
    "OrderNumber",
    "StrictModel",
    "money",
    "owned_order",
    "parse_arguments",
    "when",
]

M = TypeVar("M", bound=BaseModel)

UNAVAILABLE = "The store's systems are not answering right now; please try again in a moment."


def _order_number(value: Any) -> str:
    """Accept 1234567, "1234567" or "#1234567"; anything else is not an order number."""
    text = str(value).strip().removeprefix("#") if isinstance(value, str | int) else ""
    if len(text) != 7 or not text.isdigit():
        raise ValueError("an order number has 7 digits, e.g. 1234567")
    return text


OrderNumber = Annotated[str, BeforeValidator(_order_number)]


class StrictModel(BaseModel):
    """Tool arguments: unknown fields are an error, so a misspelt argument is not silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class NoArguments(StrictModel):
    pass


def parse_arguments(model: type[M], arguments: dict[str, Any]) -> M:
    """Validated arguments, or ToolError("invalid") naming each bad field in plain words."""
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "arguments"
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise ToolError("invalid", "; ".join(problems)) from None


def money(value: Decimal) -> str:
    """Amounts travel as strings with two decimals: exact, and JSON-able."""
    return str(Decimal(value).quantize(Decimal("0.01")))


def when(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def not_found(order_number: str) -> ToolError:
    # the same words for an unknown order and another customer's: nothing is revealed
    return ToolError("not_found", f"No order {order_number} was found on your account.")


async def owned_order(
    conn: asyncpg.Connection, customer_id: str, order_number: str, lock: bool = False
) -> asyncpg.Record:
    """The order if it belongs to `customer_id`, else not_found; `lock` holds it until the transaction ends."""
    row = await conn.fetchrow(
        "SELECT * FROM commerce.orders WHERE order_number = $1 AND customer_id = $2" + (" FOR UPDATE" if lock else ""),
        order_number,
        customer_id,
    )
    if row is None:
        raise not_found(order_number)
    return row


class CommerceTool:
    """Base of the commerce tools: subclasses set the class attributes and implement `run`.

    Satisfies `connectors.protocols.Tool`. The asyncpg pool is shared by all tools and created
    once by the caller.
    """

    name: ClassVar[str]
    writes: ClassVar[bool] = False
    description: ClassVar[str]
    Arguments: ClassVar[type[BaseModel]] = NoArguments

    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 5.0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: Any) -> dict[str, Any]:
        """The action itself, for `call.customer_id` only; a write runs inside the claiming transaction."""
        raise NotImplementedError

    async def call(self, call: ToolCall) -> dict[str, Any]:
        args = parse_arguments(self.Arguments, call.arguments)
        if self.writes and not call.idempotency_key:
            raise ToolError("invalid", "a write needs an idempotency key")
        try:
            async with asyncio.timeout(self.timeout_s), self.pool.acquire() as conn:
                if not self.writes:
                    return await self.run(conn, call, args)
                return await self._write_once(conn, call, args)
        except ToolError:
            raise
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ToolError("unavailable", UNAVAILABLE) from exc

    async def _write_once(self, conn: asyncpg.Connection, call: ToolCall, args: Any) -> dict[str, Any]:
        key = call.idempotency_key
        async with conn.transaction():
            claimed = await conn.fetchval(
                "INSERT INTO commerce.action_log (idempotency_key, tool, customer_id, arguments) "
                "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING RETURNING true",
                key,
                self.name,
                call.customer_id,
                json.dumps(call.arguments, sort_keys=True, default=str),
            )
            if not claimed:
                done = await conn.fetchrow(
                    "SELECT tool, customer_id, result FROM commerce.action_log WHERE idempotency_key = $1", key
                )
                if done is None or done["result"] is None:
                    raise ToolError("unavailable", UNAVAILABLE)
                if (done["tool"], done["customer_id"]) != (self.name, call.customer_id):
                    # never hand one customer's result to another, nor one action's to another
                    raise ToolError("invalid", "this idempotency key was already used for a different action")
                return json.loads(done["result"])
            stored = json.dumps(await self.run(conn, call, args), sort_keys=True)
            await conn.execute(
                "UPDATE commerce.action_log SET result = $2::jsonb WHERE idempotency_key = $1", key, stored
            )
            # the first caller gets exactly what a repeated key will get
            return json.loads(stored)
