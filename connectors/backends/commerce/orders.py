"""Order tools: read, list, cancel, change the address, change items, start a return.

Each acts only on orders of `call.customer_id`; another customer's order is `not_found`, with the
same words as an order that does not exist. Writes lock the order row (`FOR UPDATE`) so two
concurrent changes of one order are judged one after the other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import asyncpg
from pydantic import Field, field_validator

from connectors.backends.commerce._base import CommerceTool, OrderNumber, StrictModel, money, owned_order, when
from connectors.backends.commerce.payments import refund_payment
from connectors.protocols import ToolCall, ToolError

__all__ = ["CancelOrder", "ChangeAddress", "CreateReturn", "GetOrder", "ListOrders", "ModifyItems"]

RETURN_WINDOW = timedelta(days=30)

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
    sku: str = Field(min_length=1, max_length=40)
    qty: int = Field(ge=0, le=20, description="the new quantity; 0 removes the item")


class ModifyItemsArguments(StrictModel):
    order_number: OrderNumber
    changes: list[ItemChange] = Field(min_length=1, max_length=20)


class ModifyItems(CommerceTool):
    name = "orders.modify_items"
    writes = True
    description = (
        "Add, remove or change quantities of items on one of the caller's pending orders; the total is "
        "recomputed. Arguments: order_number, changes [{sku, qty}] (qty is the new quantity, 0 removes)."
    )
    Arguments = ModifyItemsArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ModifyItemsArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        if order["status"] != "pending":
            raise _refuse(order, "changed")
        current = {i["sku"]: i for i in await _items(conn, args.order_number)}
        # the last change of a sku wins, as if they were applied one by one
        changes = {c.sku.upper(): c.qty for c in args.changes}
        for sku, qty in changes.items():
            if sku in current:
                if qty == 0:
                    await conn.execute(
                        "DELETE FROM commerce.order_items WHERE order_number = $1 AND sku = $2", args.order_number, sku
                    )
                else:
                    await conn.execute(
                        "UPDATE commerce.order_items SET qty = $3 WHERE order_number = $1 AND sku = $2",
                        args.order_number,
                        sku,
                        qty,
                    )
            elif qty > 0:
                product = await conn.fetchrow("SELECT name, unit_price FROM commerce.products WHERE sku = $1", sku)
                if product is None:
                    raise ToolError("not_found", f"There is no product with SKU {sku}.")
                await conn.execute(
                    "INSERT INTO commerce.order_items (order_number, sku, name, qty, unit_price) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    args.order_number,
                    sku,
                    product["name"],
                    qty,
                    product["unit_price"],
                )
            else:
                raise ToolError("invalid", f"SKU {sku} is not on order {args.order_number}, so it cannot be removed.")
        items = await _items(conn, args.order_number)
        if not items:
            # the whole transaction rolls back: the order keeps its items
            raise ToolError(
                "not_allowed", f"Order {args.order_number} needs at least one item; cancel the order instead."
            )
        total = sum((i["qty"] * i["unit_price"] for i in items), Decimal(0))
        await conn.execute(
            "UPDATE commerce.orders SET total = $2, updated_at = now() WHERE order_number = $1",
            args.order_number,
            total,
        )
        return {
            "order_number": args.order_number,
            "status": "pending",
            "currency": order["currency"],
            "total": money(total),
            "items": [
                {"sku": i["sku"], "name": i["name"], "qty": i["qty"], "unit_price": money(i["unit_price"])}
                for i in items
            ],
        }


class ReturnItem(StrictModel):
    sku: str = Field(min_length=1, max_length=40)
    qty: int = Field(default=1, ge=1, le=100)


class CreateReturnArguments(StrictModel):
    order_number: OrderNumber
    kind: Literal["return", "exchange"] = "return"
    items: list[ReturnItem] | None = Field(default=None, min_length=1, description="default: every item")
    reason: str = Field(default="", max_length=500)


class CreateReturn(CommerceTool):
    name = "orders.create_return"
    writes = True
    description = (
        "Start a return or exchange of a delivered order of the caller's, within 30 days of delivery. "
        "Arguments: order_number, kind (return or exchange), items [{sku, qty}] (default all), reason."
    )
    Arguments = CreateReturnArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: CreateReturnArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        if order["status"] != "delivered":
            hint = " It can be returned once it is delivered." if order["status"] == "shipped" else ""
            if order["status"] in ("pending", "processing"):
                hint = " It can still be cancelled instead."
            raise ToolError(
                "not_allowed",
                f"Order {args.order_number} cannot be returned: it is {order['status']}, not delivered.{hint}",
            )
        delivered_at = await conn.fetchval(
            "SELECT max(delivered_at) FROM commerce.shipments WHERE order_number = $1", args.order_number
        )
        delivered_at = delivered_at or order["updated_at"]
        closes = delivered_at + RETURN_WINDOW
        if datetime.now(UTC) > closes:
            raise ToolError(
                "not_allowed",
                f"Order {args.order_number} was delivered on {delivered_at.date().isoformat()}; the 30-day return "
                f"window closed on {closes.date().isoformat()}.",
            )
        ordered = {i["sku"]: i["qty"] for i in await _items(conn, args.order_number)}
        already: dict[str, int] = {}
        for (items,) in await conn.fetch(
            "SELECT items FROM commerce.returns WHERE order_number = $1 AND status <> 'rejected'", args.order_number
        ):
            for item in json.loads(items):
                already[item["sku"]] = already.get(item["sku"], 0) + item["qty"]
        wanted: dict[str, int] = {}
        if args.items is not None:
            for item in args.items:
                wanted[item.sku.upper()] = wanted.get(item.sku.upper(), 0) + item.qty
        else:
            wanted = {sku: qty - already.get(sku, 0) for sku, qty in ordered.items() if qty > already.get(sku, 0)}
        if not wanted:
            raise ToolError("not_allowed", f"Every item of order {args.order_number} is already being returned.")
        for sku, qty in wanted.items():
            if sku not in ordered:
                raise ToolError("invalid", f"SKU {sku} is not on order {args.order_number}.")
            left = ordered[sku] - already.get(sku, 0)
            if qty > left:
                raise ToolError(
                    "not_allowed", f"Only {left} of SKU {sku} on order {args.order_number} can still be returned."
                )
        items = [{"sku": sku, "qty": qty} for sku, qty in wanted.items()]
        row = await conn.fetchrow(
            "INSERT INTO commerce.returns (order_number, kind, items, reason, status, idempotency_key) "
            "VALUES ($1, $2, $3::jsonb, $4, 'requested', $5) RETURNING return_id, created_at",
            args.order_number,
            args.kind,
            json.dumps(items),
            args.reason,
            call.idempotency_key,
        )
        return {
            "return_id": row["return_id"],
            "order_number": args.order_number,
            "kind": args.kind,
            "status": "requested",
            "items": items,
            "return_by": when(closes.date()),
        }
