"""Order tools: read, list, cancel, change the address, change items, return and exchange items.

Each acts only on orders of `call.customer_id`; another customer's order is `not_found`, with the
same words as an order that does not exist. Writes lock the order row (`FOR UPDATE`) so two
concurrent changes of one order are judged one after the other.

Each write that a customer confirms has a read tool that judges the very same request without
acting (`orders.quote_item_changes`, `orders.return_quote`, `orders.exchange_quote`), so the
confirmation question states exactly what the write will do, items and amounts from the order.
The rules live here, whatever the agent planned: items change only on a pending order; returns
and exchanges are of delivered items on the order, within the return window (30 days after
delivery), each item once. A return refunds its items in the same transaction under the refund
policy of `payments.py` (the amount the lines cost, the automatic limits, `approved_by`). An
exchange moves no money: the replacement (the same item, or another variant of it at the same
price) ships as a new order at no charge, linked to the exchange.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import Field, field_validator, model_validator

from connectors.backends.commerce._base import CommerceTool, OrderNumber, StrictModel, money, owned_order, when
from connectors.backends.commerce.payments import (
    ItemsArguments,
    RefundItem,
    RefundPolicy,
    assess_refund,
    best_named,
    match_lines,
    name_words,
    refund_payment,
)
from connectors.protocols import ToolCall, ToolError

__all__ = [
    "CancelOrder",
    "ChangeAddress",
    "CreateExchange",
    "CreateReturn",
    "ExchangeQuote",
    "GetOrder",
    "ItemChangesQuote",
    "ListOrders",
    "ModifyItems",
    "ReturnQuote",
]

MAX_LINE_QTY = 20

# why each status refuses a change, in words safe to show the customer
_WHY_NOT = {
    "shipped": "it has already shipped",
    "delivered": "it has already been delivered",
    "cancelled": "it is already cancelled",
    "returned": "it has been returned",
    "processing": "it is already being prepared for shipping",
}


def _refuse(order: asyncpg.Record, action: str, hint: str = "") -> ToolError:
    why = _WHY_NOT.get(order["status"], f"it is {order['status']}")
    return ToolError("not_allowed", f"Order {order['order_number']} cannot be {action}: {why}.{hint}")


async def _items(conn: asyncpg.Connection, order_number: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT sku, name, qty, unit_price FROM commerce.order_items WHERE order_number = $1 ORDER BY sku",
        order_number,
    )


class OrderArguments(StrictModel):
    order_number: OrderNumber


class GetOrder(CommerceTool):
    name = "orders.get_order"
    description = (
        "One of the caller's orders: status, items, total, shipping address, and the shipment's carrier, "
        "tracking number and ETA. Arguments: order_number."
    )
    Arguments = OrderArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: OrderArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        shipment = await conn.fetchrow(
            "SELECT carrier, tracking_number, status, shipped_at, eta, delivered_at FROM commerce.shipments "
            "WHERE order_number = $1 ORDER BY shipment_id LIMIT 1",
            args.order_number,
        )
        return {
            "order_number": order["order_number"],
            "status": order["status"],
            "placed_at": when(order["placed_at"]),
            "updated_at": when(order["updated_at"]),
            "currency": order["currency"],
            "total": money(order["total"]),
            "items": [
                {"sku": i["sku"], "name": i["name"], "qty": i["qty"], "unit_price": money(i["unit_price"])}
                for i in await _items(conn, args.order_number)
            ],
            "shipping_address": json.loads(order["shipping_address"]),
            "shipment": None
            if shipment is None
            else {
                "carrier": shipment["carrier"],
                "tracking_number": shipment["tracking_number"],
                "status": shipment["status"],
                "shipped_at": when(shipment["shipped_at"]),
                "eta": when(shipment["eta"]),
                "delivered_at": when(shipment["delivered_at"]),
            },
        }


class ListOrdersArguments(StrictModel):
    limit: int = Field(default=5, ge=1, le=20)


class ListOrders(CommerceTool):
    name = "orders.list_orders"
    description = "The caller's most recent orders, newest first. Arguments: limit (1-20, default 5)."
    Arguments = ListOrdersArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ListOrdersArguments) -> dict[str, Any]:
        rows = await conn.fetch(
            "SELECT o.order_number, o.status, o.placed_at, o.currency, o.total, "
            "(SELECT sum(qty) FROM commerce.order_items i WHERE i.order_number = o.order_number) AS item_count "
            "FROM commerce.orders o WHERE o.customer_id = $1 ORDER BY o.placed_at DESC, o.order_number LIMIT $2",
            call.customer_id,
            args.limit,
        )
        return {
            "orders": [
                {
                    "order_number": r["order_number"],
                    "status": r["status"],
                    "placed_at": when(r["placed_at"]),
                    "currency": r["currency"],
                    "total": money(r["total"]),
                    "item_count": int(r["item_count"] or 0),
                }
                for r in rows
            ]
        }


class CancelArguments(StrictModel):
    order_number: OrderNumber
    reason: str = Field(default="", max_length=500)


class CancelOrder(CommerceTool):
    name = "orders.cancel_order"
    writes = True
    description = (
        "Cancel one of the caller's orders while it is pending or processing; a captured payment is refunded "
        "in full to the original payment method. Arguments: order_number, reason (optional)."
    )
    Arguments = CancelArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: CancelArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        if order["status"] not in ("pending", "processing"):
            hint = " A return can be started once it is delivered." if order["status"] == "shipped" else ""
            raise _refuse(order, "cancelled", hint)
        await conn.execute(
            "UPDATE commerce.orders SET status = 'cancelled', updated_at = now() WHERE order_number = $1",
            args.order_number,
        )
        refund = await refund_payment(
            conn, order, None, args.reason or "order cancelled", call.idempotency_key, required=False
        )
        return {"order_number": args.order_number, "status": "cancelled", "refund": refund}


class Address(StrictModel):
    name: str | None = Field(default=None, max_length=200)
    lines: list[str] = Field(min_length=1, max_length=3)
    city: str = Field(min_length=1, max_length=100)
    zip: str = Field(min_length=2, max_length=12)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166 two-letter code, e.g. US")


class ChangeAddressArguments(StrictModel):
    order_number: OrderNumber
    address: Address

    @field_validator("address", mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        """A playbook slot is one line of text: "street, [more lines,] city, ZIP, country code"."""
        if not isinstance(value, str):
            return value
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if len(parts) < 4 or len(parts[-1]) != 2:
            raise ValueError("write the address as: street and number, city, ZIP, two-letter country code")
        return {"lines": parts[:-3], "city": parts[-3], "zip": parts[-2], "country": parts[-1]}


class ChangeAddress(CommerceTool):
    name = "orders.change_address"
    writes = True
    description = (
        "Change the shipping address of one of the caller's orders while it is pending or processing. "
        "Arguments: order_number, address {name?, lines[], city, zip, country (2 letters)}."
    )
    Arguments = ChangeAddressArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ChangeAddressArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        if order["status"] not in ("pending", "processing"):
            raise _refuse(order, "sent to another address")
        address = args.address.model_dump()
        address["country"] = address["country"].upper()
        if address["name"] is None:
            address["name"] = json.loads(order["shipping_address"]).get("name")
        await conn.execute(
            "UPDATE commerce.orders SET shipping_address = $2::jsonb, updated_at = now() WHERE order_number = $1",
            args.order_number,
            json.dumps(address),
        )
        return {"order_number": args.order_number, "status": order["status"], "shipping_address": address}


class ItemChange(StrictModel):
    """One change to an order line, named by SKU or by (part of) its name: a new quantity or a difference."""

    sku: str | None = Field(default=None, min_length=1, max_length=40)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    qty: int | None = Field(default=None, ge=0, le=MAX_LINE_QTY, description="the new quantity; 0 removes the item")
    delta: int | None = Field(default=None, ge=-MAX_LINE_QTY, le=MAX_LINE_QTY, description="add (+) or remove (-)")

    @model_validator(mode="after")
    def _one_each(self) -> ItemChange:
        if (self.sku is None) == (self.name is None):
            raise ValueError("name the item by sku or by name")
        if (self.qty is None) == (self.delta is None) or self.delta == 0:
            raise ValueError("give the new qty or a non-zero delta")
        return self


_CHANGE_SEPARATOR = re.compile(r"(?i)\s*(?:,|;|&|\band\b|\bplus\b|\balso\b)\s*")
_COUNT = r"(?:(\d{1,2})\s*(?:x\s+|×\s*)?|(?:an?|one|another)\s+)?"
_REMOVE = re.compile(
    r"(?i)^(?:remove|delete|drop|cancel|take\s+(?:out|off|away)|no\s+more|without|don'?t\s+want)\s+" + _COUNT + r"(.+)$"
)
_ADD = re.compile(r"(?i)^(?:add|include|i\s+also\s+want|one\s+more)\s+" + _COUNT + r"(.+)$")
_SET_TO = re.compile(r"(?i)^(?:change|make|set|update)?\s*(.+?)\s+to\s+(\d{1,2})(?:\s*x)?$")
_BARE_QTY = re.compile(r"^(\d{1,2})\s*(?:x\s+|×\s*)?(.+)$")
_POLITE = re.compile(r"(?i)^(?:please\s+|pls\s+|can\s+you\s+|could\s+you\s+|i'?d\s+like\s+to\s+|i\s+want\s+to\s+)+")


def parse_item_changes(value: Any) -> Any:
    """A playbook slot is one line ("add 2 mugs and remove the socks", "kettle to 2"); a list passes as it is.

    A phrase without a verb takes the one before it ("add a mug and 2 kettles" adds both); a bare
    count on its own is the new quantity ("2 kettles").
    """
    if not isinstance(value, str):
        return value
    changes: list[dict[str, Any]] = []
    verb: str | None = None
    for raw in _CHANGE_SEPARATOR.split(value):
        phrase = _POLITE.sub("", raw.strip(" .!")).strip()
        if not phrase:
            continue
        if match := _REMOVE.match(phrase):
            verb = "remove"
            count, name = match.group(1), match.group(2)
            changes.append({"name": name, "delta": -int(count)} if count else {"name": name, "qty": 0})
        elif match := _ADD.match(phrase):
            verb = "add"
            changes.append({"name": match.group(2), "delta": int(match.group(1) or 1)})
        elif match := _SET_TO.match(phrase):
            verb = None
            changes.append({"name": match.group(1), "qty": int(match.group(2))})
        elif verb is not None:
            count_match = _BARE_QTY.match(phrase)
            count, name = (int(count_match.group(1)), count_match.group(2)) if count_match else (None, phrase)
            if verb == "add":
                changes.append({"name": name, "delta": count or 1})
            else:
                changes.append({"name": name, "delta": -count} if count else {"name": name, "qty": 0})
        elif match := _BARE_QTY.match(phrase):
            changes.append({"name": match.group(2), "qty": int(match.group(1))})
        else:
            raise ValueError(
                f"I couldn't tell what to do with {phrase!r}: say for example 'add 1 mug', 'remove the socks' "
                "or 'kettle to 2'"
            )
    if not changes:
        raise ValueError("say which items to add, remove or change, e.g. 'add 1 mug and remove the socks'")
    return changes


class ItemChangesArguments(StrictModel):
    order_number: OrderNumber
    changes: list[ItemChange] = Field(
        min_length=1,
        max_length=20,
        description="[{sku or name, qty (new quantity, 0 removes) or delta (+add / -remove)}], or one line of "
        "text such as 'add 2 mugs and remove the socks'",
    )

    @field_validator("changes", mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        return parse_item_changes(value)


@dataclass(frozen=True)
class LineChange:
    sku: str
    name: str
    unit_price: Decimal
    before: int
    after: int

    def text(self, currency: str) -> str:
        if self.after == 0:
            return f"remove {self.before} x {self.name}"
        if self.before == 0:
            return f"add {self.after} x {self.name} ({money(self.unit_price)} {currency} each)"
        return f"{self.name} from {self.before} to {self.after}"


@dataclass(frozen=True)
class ItemChangesPlan:
    """What a change of items does to a pending order: each line before and after, and the totals."""

    order_number: str
    currency: str
    changes: list[LineChange]
    items: list[tuple[str, str, int, Decimal]]  # (sku, name, qty, unit price) after the change
    total_before: Decimal

    @property
    def total_after(self) -> Decimal:
        return sum((qty * price for _, _, qty, price in self.items), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_number": self.order_number,
            "status": "pending",
            "currency": self.currency,
            "changes": [
                {
                    "sku": c.sku,
                    "name": c.name,
                    "qty_before": c.before,
                    "qty_after": c.after,
                    "unit_price": money(c.unit_price),
                }
                for c in self.changes
            ],
            "changes_text": "; ".join(c.text(self.currency) for c in self.changes),
            "total_before": money(self.total_before),
            "total_after": money(self.total_after),
            "difference": money(self.total_after - self.total_before),
            "items": [
                {"sku": sku, "name": name, "qty": qty, "unit_price": money(price)}
                for sku, name, qty, price in self.items
            ],
            "total": money(self.total_after),
        }


async def plan_item_changes(
    conn: asyncpg.Connection, order: asyncpg.Record, changes: list[ItemChange]
) -> ItemChangesPlan:
    """Judge `changes` against the order and the catalog, applied one by one, without writing anything.

    Refuses an order that is not pending, an item to remove that is not on the order, a product
    the catalog does not have, and a change that would leave the order empty (cancel it instead).
    """
    number = order["order_number"]
    if order["status"] != "pending":
        raise _refuse(order, "changed")
    current = {i["sku"]: i for i in await _items(conn, number)}
    after: dict[str, int] = {sku: line["qty"] for sku, line in current.items()}
    known: dict[str, tuple[str, Decimal]] = {sku: (line["name"], line["unit_price"]) for sku, line in current.items()}
    mentioned: list[str] = []
    for change in changes:
        removing = change.qty == 0 or (change.delta is not None and change.delta < 0)
        sku = await _target(conn, number, change, list(current.values()), removing)
        if sku not in known:
            if removing:
                raise ToolError("invalid", f"SKU {sku} is not on order {number}, so it cannot be removed.")
            product = await conn.fetchrow("SELECT name, unit_price FROM commerce.products WHERE sku = $1", sku)
            if product is None:
                raise ToolError("not_found", f"There is no product with SKU {sku}.")
            known[sku] = (product["name"], product["unit_price"])
        qty = change.qty if change.qty is not None else after.get(sku, 0) + (change.delta or 0)
        if qty < 0:
            raise ToolError(
                "invalid", f"Order {number} has only {after.get(sku, 0)} x {known[sku][0]}, so {-(change.delta or 0)} "
                "cannot be removed."
            )  # fmt: skip
        if qty > MAX_LINE_QTY:
            raise ToolError("not_allowed", f"At most {MAX_LINE_QTY} of one item fit on an order.")
        after[sku] = qty
        if sku not in mentioned:
            mentioned.append(sku)
    before = {sku: line["qty"] for sku, line in current.items()}
    lines = [
        LineChange(sku, known[sku][0], known[sku][1], before.get(sku, 0), after[sku])
        for sku in mentioned
        if before.get(sku, 0) != after[sku]
    ]
    if not lines:
        raise ToolError("invalid", f"That would leave order {number} as it is.")
    items = [(sku, known[sku][0], qty, known[sku][1]) for sku, qty in sorted(after.items()) if qty > 0]
    if not items:
        # refused before anything is written, so the order keeps its items
        raise ToolError("not_allowed", f"Order {number} needs at least one item; cancel the order instead.")
    return ItemChangesPlan(number, order["currency"], lines, items, order["total"])


async def _target(
    conn: asyncpg.Connection, number: str, change: ItemChange, lines: list[asyncpg.Record], removing: bool
) -> str:
    """The SKU a change means: by SKU as given, else the order line its name names, else a catalog product."""
    if change.sku is not None:
        return change.sku.strip().upper()
    name = change.name or ""
    found = best_named(name, lines)
    if not found and not removing:
        found = best_named(name, list(await conn.fetch("SELECT sku, name FROM commerce.products ORDER BY sku")))
    if not found:
        where = f"on order {number}" if removing else "on the order or in the shop"
        raise ToolError("invalid", f"I couldn't find {name!r} {where}.")
    if len(found) > 1:
        names = " or ".join(row["name"] for row in found)
        raise ToolError("invalid", f"{name!r} could be {names}; which one do you mean?")
    return str(found[0]["sku"])


class ItemChangesQuote(CommerceTool):
    name = "orders.quote_item_changes"
    description = (
        "What a change of items would do to one of the caller's pending orders, without changing it: each line "
        "before and after, the totals, and the same refusals as orders.modify_items. Arguments: order_number, "
        "changes (as for orders.modify_items)."
    )
    Arguments = ItemChangesArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ItemChangesArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        return (await plan_item_changes(conn, order, args.changes)).as_dict()


class ModifyItems(CommerceTool):
    name = "orders.modify_items"
    writes = True
    description = (
        "Add, remove or change quantities of items on one of the caller's pending orders; the total is "
        "recomputed. Arguments: order_number, changes [{sku or name, qty (new quantity, 0 removes) or delta}] "
        "or one line of text ('add 2 mugs and remove the socks')."
    )
    Arguments = ItemChangesArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ItemChangesArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        plan = await plan_item_changes(conn, order, args.changes)
        for change in plan.changes:
            if change.after == 0:
                await conn.execute(
                    "DELETE FROM commerce.order_items WHERE order_number = $1 AND sku = $2", plan.order_number,
                    change.sku,
                )  # fmt: skip
            elif change.before == 0:
                await conn.execute(
                    "INSERT INTO commerce.order_items (order_number, sku, name, qty, unit_price) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    plan.order_number, change.sku, change.name, change.after, change.unit_price,
                )  # fmt: skip
            else:
                await conn.execute(
                    "UPDATE commerce.order_items SET qty = $3 WHERE order_number = $1 AND sku = $2",
                    plan.order_number, change.sku, change.after,
                )  # fmt: skip
        await conn.execute(
            "UPDATE commerce.orders SET total = $2, updated_at = now() WHERE order_number = $1",
            plan.order_number,
            plan.total_after,
        )
        return plan.as_dict()


@dataclass(frozen=True)
class ReturnAssessment:
    """Delivered lines the customer named that may still be returned or exchanged, and the window's end."""

    order_number: str
    lines: list[tuple[asyncpg.Record, int]]
    window_closes: datetime

    def items(self) -> list[dict[str, Any]]:
        return [{"sku": line["sku"], "name": line["name"], "qty": qty} for line, qty in self.lines]

    def items_text(self) -> str:
        return ", ".join(f"{qty} x {line['name']}" for line, qty in self.lines)


async def assess_return(
    conn: asyncpg.Connection,
    order: asyncpg.Record,
    items: list[RefundItem] | None,
    policy: RefundPolicy,
    verb: str = "returned",
) -> ReturnAssessment:
    """Judge a return or exchange of `items` (None: every line still open): delivered, in the window, on the order.

    The window and clock are the refund policy's, so a return and its refund can never disagree
    about whether it is too late.
    """
    number = order["order_number"]
    if order["status"] != "delivered":
        hint = f" It can be {verb} once it is delivered." if order["status"] == "shipped" else ""
        if order["status"] in ("pending", "processing"):
            hint = " It can still be cancelled or changed instead."
        raise ToolError(
            "not_allowed", f"Order {number} cannot be {verb}: it is {order['status']}, not delivered.{hint}"
        )
    delivered_at = await conn.fetchval("SELECT max(delivered_at) FROM commerce.shipments WHERE order_number = $1",
                                       number)  # fmt: skip
    delivered_at = delivered_at or order["updated_at"]
    closes = delivered_at + policy.return_window
    if policy.clock() > closes:
        raise ToolError(
            "not_allowed",
            f"Order {number} was delivered on {delivered_at.date().isoformat()}; the {policy.return_window.days}-day "
            f"return window closed on {closes.date().isoformat()}.",
        )
    lines = await _items(conn, number)
    return ReturnAssessment(number, match_lines(number, lines, await _consumed(conn, number), items, verb), closes)


async def _consumed(conn: asyncpg.Connection, number: str) -> dict[str, int]:
    """Per SKU, how many can no longer be returned or exchanged: exchanged, or returned or refunded.

    A return refunds its items, so the same item shows in both returns and refunds: the larger of
    the two counts it once, and also counts a refund without a return (get_refund) and a seeded
    return whose refund names no items.
    """
    returned: dict[str, int] = {}
    exchanged: dict[str, int] = {}
    for kind, items in await conn.fetch(
        "SELECT kind, items FROM commerce.returns WHERE order_number = $1 AND status <> 'rejected'", number
    ):
        into = exchanged if kind == "exchange" else returned
        for item in json.loads(items):
            into[item["sku"]] = into.get(item["sku"], 0) + item["qty"]
    refunded: dict[str, int] = {}
    for (items,) in await conn.fetch("SELECT items FROM commerce.refunds WHERE order_number = $1", number):
        for item in json.loads(items):
            refunded[item["sku"]] = refunded.get(item["sku"], 0) + item["qty"]
    skus = set(returned) | set(exchanged) | set(refunded)
    return {sku: exchanged.get(sku, 0) + max(returned.get(sku, 0), refunded.get(sku, 0)) for sku in skus}


class ReturnArguments(ItemsArguments):
    reason: str = Field(default="", max_length=500)
    approved_by: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the human who approved a refund above the automatic limit; set only by the workspace",
    )


class _WithPolicy(CommerceTool):
    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 5.0, policy: RefundPolicy | None = None) -> None:
        super().__init__(pool, timeout_s)
        self.policy = policy or RefundPolicy()


class ReturnQuote(_WithPolicy):
    name = "orders.return_quote"
    description = (
        "What returning items of one of the caller's delivered orders would do, without doing it: the items, "
        "the refund they come to and whether it needs a colleague's approval; refuses as orders.create_return "
        "would. Arguments: order_number, items (default all)."
    )
    Arguments = ItemsArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ItemsArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        assessment = await assess_return(conn, order, args.items, self.policy)
        refund = await assess_refund(conn, call.customer_id, order, _as_refund(assessment), self.policy)
        return {
            "order_number": order["order_number"],
            "currency": order["currency"],
            "items": assessment.items(),
            "items_text": assessment.items_text(),
            "amount": money(refund.amount),
            "needs_approval": refund.needs_approval,
            "return_by": when(assessment.window_closes.date()),
        }


def _as_refund(assessment: ReturnAssessment) -> list[RefundItem]:
    return [RefundItem(sku=line["sku"], qty=qty) for line, qty in assessment.lines]


class CreateReturn(_WithPolicy):
    name = "orders.create_return"
    writes = True
    description = (
        "Return items of one of the caller's delivered orders, within 30 days of delivery, and refund what they "
        "cost to the original payment method in the same step (the refund policy of payments.refund: above the "
        "automatic limit it is refused as needs_approval). Arguments: order_number, items (default all), reason."
    )
    Arguments = ReturnArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ReturnArguments) -> dict[str, Any]:
        # the customer row first, as payments.refund locks it: refunds of one customer are judged one at a time
        await conn.execute("SELECT 1 FROM commerce.customers WHERE customer_id = $1 FOR UPDATE", call.customer_id)
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        assessment = await assess_return(conn, order, args.items, self.policy)
        refund = await assess_refund(conn, call.customer_id, order, _as_refund(assessment), self.policy)
        if args.approved_by is None and refund.needs_approval:
            raise ToolError("needs_approval", refund.approval_reason())
        stored = [{"sku": line["sku"], "qty": qty} for line, qty in assessment.lines]
        row = await conn.fetchrow(
            "INSERT INTO commerce.returns (order_number, kind, items, reason, status, idempotency_key) "
            "VALUES ($1, 'return', $2::jsonb, $3, 'requested', $4) RETURNING return_id",
            args.order_number, json.dumps(stored), args.reason, call.idempotency_key,
        )  # fmt: skip
        refunded = await refund_payment(
            conn,
            order,
            refund.amount,
            f"return {row['return_id']}" + (f": {args.reason}" if args.reason else ""),
            call.idempotency_key,
            items=refund.lines,
            automatic=args.approved_by is None,
            approved_by=args.approved_by,
        )
        return {
            "return_id": row["return_id"],
            "order_number": args.order_number,
            "kind": "return",
            "status": "requested",
            "items": stored,
            "items_text": assessment.items_text(),
            "return_by": when(assessment.window_closes.date()),
            "refund": refunded,
        }


_SAME = re.compile(
    r"(?i)^\s*(?:the\s+)?(?:same(?:\s+\w+)?|(?:a\s+|an?\s+)?(?:replacement|new\s+one|identical(?:\s+\w+)?)|"
    r"again|one\s+that\s+works)\s*[.!]?\s*$"
)
# what customers call a size that a SKU writes as a letter
_SIZE_WORDS = {"small": "s", "medium": "m", "large": "l", "xs": "xs", "xl": "xl", "xxl": "xxl"}


class ExchangeArguments(ItemsArguments):
    replacement: str | None = Field(
        default=None,
        max_length=200,
        description="what to send instead: 'same' (default) for the same item, or another variant of it "
        "(e.g. 'size 43', 'large'), only for one item",
    )
    reason: str = Field(default="", max_length=500)


@dataclass(frozen=True)
class ExchangePlan:
    assessment: ReturnAssessment
    replacements: list[tuple[str, str, int]]  # (sku, name, qty) to send

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_number": self.assessment.order_number,
            "items": self.assessment.items(),
            "items_text": self.assessment.items_text(),
            "replacement_items": [{"sku": sku, "name": name, "qty": qty} for sku, name, qty in self.replacements],
            "replacement_text": ", ".join(f"{qty} x {name}" for _, name, qty in self.replacements),
            "return_by": when(self.assessment.window_closes.date()),
        }


async def plan_exchange(
    conn: asyncpg.Connection, order: asyncpg.Record, args: ExchangeArguments, policy: RefundPolicy
) -> ExchangePlan:
    """The lines to send back and what replaces them: the same product, or a variant of it at the same price."""
    assessment = await assess_return(conn, order, args.items, policy, verb="exchanged")
    if args.replacement is None or _SAME.match(args.replacement):
        return ExchangePlan(assessment, [(line["sku"], line["name"], qty) for line, qty in assessment.lines])
    if len(assessment.lines) != 1:
        raise ToolError("invalid", "Name one item to exchange for another size or variant.")
    line, qty = assessment.lines[0]
    variant = await _variant(conn, line, args.replacement)
    return ExchangePlan(assessment, [(variant["sku"], variant["name"], qty)])


async def _variant(conn: asyncpg.Connection, line: asyncpg.Record, wanted: str) -> asyncpg.Record:
    """The catalog's other variant of the line's product (same SKU stem, e.g. SHO-TRAI-42 → SHO-TRAI-43)."""
    stem = line["sku"].rsplit("-", 1)[0]
    variants = await conn.fetch(
        "SELECT sku, name, unit_price FROM commerce.products WHERE sku LIKE $1 AND sku <> $2 ORDER BY sku",
        stem.replace("%", r"\%").replace("_", r"\_") + "-%",
        line["sku"],
    )
    if not variants:
        raise ToolError(
            "not_allowed", f"{line['name']} comes in no other variant; I can only exchange it for the same item."
        )
    tokens = {_SIZE_WORDS.get(t, t) for t in re.findall(r"[a-z0-9]+", wanted.lower())}
    extra = name_words(wanted) - name_words(line["name"])
    found = [v for v in variants if v["sku"].rsplit("-", 1)[1].lower() in tokens]
    found = found or [v for v in variants if extra and extra <= name_words(v["name"])]
    listing = "; ".join(v["name"] for v in variants)
    if len(found) != 1:
        raise ToolError("invalid", f"I couldn't match {wanted!r} to one variant of {line['name']}: {listing}.")
    if found[0]["unit_price"] != line["unit_price"]:
        # a different price would move money, which an exchange never does: that is a return and a new order
        raise ToolError(
            "not_allowed",
            f"{found[0]['name']} costs {money(found[0]['unit_price'])}, not {money(line['unit_price'])}, so it "
            "can't be an exchange; return the item and order the other one instead.",
        )
    return found[0]


class ExchangeQuote(_WithPolicy):
    name = "orders.exchange_quote"
    description = (
        "What exchanging items of one of the caller's delivered orders would do, without doing it: what goes "
        "back and what is sent instead; refuses as orders.create_exchange would. Arguments: order_number, "
        "items, replacement ('same' or a variant such as 'size 43')."
    )
    Arguments = ExchangeArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ExchangeArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        return (await plan_exchange(conn, order, args, self.policy)).as_dict()


class CreateExchange(_WithPolicy):
    name = "orders.create_exchange"
    writes = True
    description = (
        "Exchange items of one of the caller's delivered orders, within 30 days of delivery, for the same item "
        "or another variant at the same price: starts the return of the items and places the replacement as a "
        "new order at no charge. No money moves. Arguments: order_number, items, replacement, reason."
    )
    Arguments = ExchangeArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ExchangeArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        plan = await plan_exchange(conn, order, args, self.policy)
        stored = [{"sku": line["sku"], "qty": qty} for line, qty in plan.assessment.lines]
        row = await conn.fetchrow(
            "INSERT INTO commerce.returns (order_number, kind, items, reason, status, idempotency_key) "
            "VALUES ($1, 'exchange', $2::jsonb, $3, 'requested', $4) RETURNING return_id",
            args.order_number, json.dumps(stored), args.reason, call.idempotency_key,
        )  # fmt: skip
        sequence = await conn.fetchval("SELECT nextval('commerce.replacement_order_numbers')")
        number = f"{sequence:07d}"
        await conn.execute(
            "INSERT INTO commerce.orders (order_number, customer_id, status, currency, total, shipping_address, "
            "placed_at, updated_at) VALUES ($1, $2, 'processing', $3, 0, $4::jsonb, now(), now())",
            number, call.customer_id, order["currency"], order["shipping_address"],
        )  # fmt: skip
        for sku, name, qty in plan.replacements:
            # the replacement is paid for by the item coming back
            await conn.execute(
                "INSERT INTO commerce.order_items (order_number, sku, name, qty, unit_price) "
                "VALUES ($1, $2, $3, $4, 0)",
                number, sku, name, qty,
            )  # fmt: skip
        await conn.execute(
            "UPDATE commerce.returns SET replacement_order = $2 WHERE return_id = $1", row["return_id"], number
        )
        return {
            **plan.as_dict(),
            "return_id": row["return_id"],
            "kind": "exchange",
            "status": "requested",
            "replacement_order": number,
        }
