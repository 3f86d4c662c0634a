"""Payment tools: refunds to the original payment method, refund and payment status.

A refund locks the order's payment row, so concurrent refunds of one payment are judged one
after the other against what is left: captured amount minus everything already refunded.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import Field

from connectors.backends.commerce._base import CommerceTool, OrderNumber, StrictModel, money, owned_order, when
from connectors.protocols import ToolCall, ToolError

__all__ = ["PaymentStatus", "Refund", "RefundStatus", "refund_payment"]

_PAYMENT = """
SELECT p.payment_id, p.amount, p.status, p.captured_at, m.label AS method,
       (SELECT coalesce(sum(r.amount), 0) FROM commerce.refunds r WHERE r.payment_id = p.payment_id) AS refunded
FROM commerce.payments p JOIN commerce.payment_methods m USING (payment_method_id)
WHERE p.order_number = $1
ORDER BY p.captured_at NULLS LAST, p.payment_id
LIMIT 1
"""


async def refund_payment(
    conn: asyncpg.Connection,
    order: asyncpg.Record,
    amount: Decimal | None,
    reason: str,
    idempotency_key: str,
    required: bool = True,
) -> dict[str, Any] | None:
    """Refund `amount` (None: all that is left) of the order's captured payment, inside the caller's transaction.

    With `required=False` an order with nothing to refund returns None instead of refusing
    (a cancelled pending order was never charged).
    """
    payment = await conn.fetchrow(
        "SELECT payment_id FROM commerce.payments WHERE order_number = $1 AND status <> 'failed' "
        "ORDER BY captured_at NULLS LAST, payment_id LIMIT 1 FOR UPDATE",
        order["order_number"],
    )
    if payment is not None:
        payment = await conn.fetchrow(_PAYMENT, order["order_number"])
    left = Decimal(0) if payment is None else payment["amount"] - payment["refunded"]
    if left <= 0:
        if not required:
            return None
        raise ToolError("not_allowed", f"Order {order['order_number']} has no payment left to refund.")
    amount = left if amount is None else amount
    if amount > left:
        raise ToolError(
            "not_allowed",
            f"At most {money(left)} {order['currency']} can be refunded on order {order['order_number']} "
            f"({money(payment['refunded'])} of {money(payment['amount'])} already refunded).",
        )
    row = await conn.fetchrow(
        "INSERT INTO commerce.refunds (order_number, payment_id, amount, reason, status, idempotency_key) "
        "VALUES ($1, $2, $3, $4, 'pending', $5) RETURNING refund_id, created_at",
        order["order_number"],
        payment["payment_id"],
        amount,
        reason,
        idempotency_key,
    )
    status = "refunded" if amount == left else "partially_refunded"
    await conn.execute("UPDATE commerce.payments SET status = $2 WHERE payment_id = $1", payment["payment_id"], status)
    return {
        "refund_id": row["refund_id"],
        "order_number": order["order_number"],
        "amount": money(amount),
        "currency": order["currency"],
        "status": "pending",
        "payment_method": payment["method"],
        "payment_status": status,
        "refundable_left": money(left - amount),
        "created_at": when(row["created_at"]),
    }


class RefundArguments(StrictModel):
    order_number: OrderNumber
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2, description='e.g. 19.90 or "19.90"')
    currency: str | None = Field(default=None, description="when given, must be the order's currency (ISO code)")
    reason: str = Field(min_length=1, max_length=500)


class Refund(CommerceTool):
    name = "payments.refund"
    writes = True
    description = (
        "Refund part or all of the captured payment of one of the caller's orders, to the original payment "
        "method. Arguments: order_number, amount (in the order's currency), reason."
    )
    Arguments = RefundArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: RefundArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        if args.currency is not None and args.currency.strip().upper() != order["currency"]:
            raise ToolError("invalid", f"order {args.order_number} was paid in {order['currency']}")
        result = await refund_payment(conn, order, args.amount, args.reason, call.idempotency_key)
        assert result is not None  # required=True refuses instead of returning None
        return result


class OrderArguments(StrictModel):
    order_number: OrderNumber


class RefundStatus(CommerceTool):
    name = "payments.refund_status"
    description = "The refunds of one of the caller's orders and where each stands. Arguments: order_number."
    Arguments = OrderArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: OrderArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        rows = await conn.fetch(
            "SELECT r.refund_id, r.amount, r.reason, r.status, r.created_at, m.label AS method "
            "FROM commerce.refunds r JOIN commerce.payments p USING (payment_id) "
            "JOIN commerce.payment_methods m USING (payment_method_id) "
            "WHERE r.order_number = $1 ORDER BY r.created_at, r.refund_id",
            args.order_number,
        )
        return {
            "order_number": args.order_number,
            "currency": order["currency"],
            "refunded_total": money(sum((r["amount"] for r in rows), Decimal(0))),
            "refunds": [
                {
                    "refund_id": r["refund_id"],
                    "amount": money(r["amount"]),
                    "status": r["status"],
                    "reason": r["reason"],
                    "payment_method": r["method"],
                    "created_at": when(r["created_at"]),
                }
                for r in rows
            ],
        }


class PaymentStatus(CommerceTool):
    name = "payments.payment_status"
    description = (
        "How one of the caller's orders was paid: status (captured, failed, refunded, partially_refunded, or "
        "awaiting_capture before processing), amount, method, refunded so far. Arguments: order_number."
    )
    Arguments = OrderArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: OrderArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        payment = await conn.fetchrow(_PAYMENT, args.order_number)
        if payment is None:
            return {
                "order_number": args.order_number,
                "status": "awaiting_capture",
                "amount": money(order["total"]),
                "currency": order["currency"],
                "payment_method": None,
                "captured_at": None,
                "refunded": money(Decimal(0)),
            }
        return {
            "order_number": args.order_number,
            "status": payment["status"],
            "amount": money(payment["amount"]),
            "currency": order["currency"],
            "payment_method": payment["method"],
            "captured_at": when(payment["captured_at"]),
            "refunded": money(payment["refunded"]),
        }
