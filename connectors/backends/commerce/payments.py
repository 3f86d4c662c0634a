"""Payment tools: refunds to the original payment method, refund quotes, refund and payment status.

The tenant's refund policy (`RefundPolicy`) is enforced here, in the backend, whatever the agent
planned: a refund is for order lines the customer names (its amount is what those lines cost,
never a typed figure), of an order in a refundable status (`delivered`) within the return window
(30 days after delivery, as the help text promises), never more than was captured, and the agent's
automatic refunds stay within the approval limit per order and per customer over a rolling window
(7 days). Above it the refund is refused as `needs_approval` — a human approves it in the
workspace, which sends `approved_by`. A refund locks the customer row, then the order and its
payment, so concurrent refunds of one customer are judged one after the other against the totals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import Field, field_validator

from connectors.backends.commerce._base import CommerceTool, OrderNumber, StrictModel, money, owned_order, when
from connectors.protocols import ToolCall, ToolError

__all__ = [
    "REFUNDABLE_STATUSES",
    "ItemsArguments",
    "PaymentStatus",
    "Refund",
    "RefundItem",
    "RefundPolicy",
    "RefundQuote",
    "RefundStatus",
    "assess_refund",
    "best_named",
    "match_lines",
    "name_words",
    "parse_item_names",
    "refund_payment",
]

# A refund pays back goods the customer has: earlier the order is cancelled instead (which refunds
# what was captured), a cancelled or returned order was refunded by that process.
REFUNDABLE_STATUSES = ("delivered",)
_WHY_NOT = {
    "pending": "it has not shipped yet, so it can be cancelled instead (which refunds any payment)",
    "processing": "it has not shipped yet, so it can be cancelled instead (which refunds any payment)",
    "shipped": "it is still on its way; a refund is possible once it is delivered",
    "cancelled": "it is cancelled, and its payment was refunded when it was cancelled",
    "returned": "it has been returned, and its refund is handled with the return",
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RefundPolicy:
    """The tenant's refund rules; the same limit as `refund_limit` in operators/data/action_policy.yaml."""

    limit: Mapping[str, Decimal] = field(default_factory=lambda: {c: Decimal("100.00") for c in ("EUR", "USD", "GBP")})
    return_window: timedelta = timedelta(days=30)
    customer_window: timedelta = timedelta(days=7)
    refundable_statuses: tuple[str, ...] = REFUNDABLE_STATUSES
    clock: Callable[[], datetime] = _utcnow


_PAYMENT = """
SELECT p.payment_id, p.amount, p.status, p.captured_at, m.label AS method,
       (SELECT coalesce(sum(r.amount), 0) FROM commerce.refunds r WHERE r.payment_id = p.payment_id) AS refunded
FROM commerce.payments p JOIN commerce.payment_methods m USING (payment_method_id)
WHERE p.order_number = $1
ORDER BY p.captured_at NULLS LAST, p.payment_id
LIMIT 1
"""


class RefundItem(StrictModel):
    """One order line to refund, named by SKU or by (part of) its name; `qty` defaults to all not yet refunded."""

    sku: str | None = Field(default=None, max_length=40)
    name: str | None = Field(default=None, max_length=200)
    qty: int | None = Field(default=None, ge=1, le=100)


_ALL = re.compile(r"(?i)^\s*(all|everything|all of (it|them)|the whole order|whole order|all (the )?items)\s*[.!]?\s*$")
_SEPARATOR = re.compile(r"(?i)\s*(?:,|;|&|\band\b|\bplus\b)\s*")
_LEADING_QTY = re.compile(r"^(\d{1,3})\s*(?:x\s+|×\s*)?(.+)$")
_FILLER = {"the", "my", "a", "an", "of", "both", "pair", "set", "all", "item", "items", "please", "one", "just"}


def parse_item_names(value: Any) -> Any:
    """A playbook slot is one line of text ("the socks and 1 mug", "all"); a list is passed on as it is."""
    if not isinstance(value, str):
        return value
    if _ALL.match(value):
        return None
    items: list[dict[str, Any]] = []
    for phrase in (p.strip(" .!") for p in _SEPARATOR.split(value)):
        if not phrase:
            continue
        qty = _LEADING_QTY.match(phrase)
        items.append({"name": qty.group(2), "qty": int(qty.group(1))} if qty else {"name": phrase})
    if not items:
        raise ValueError("name the items, e.g. 'the socks and the mug', or 'all'")
    return items


def name_words(text: str) -> set[str]:
    # singular and lower-case, so "mug" names "Stoneware mugs (set of 4)"
    return {w.removesuffix("s") for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FILLER and len(w) > 1}


@dataclass(frozen=True)
class Assessment:
    """What a refund of the named lines comes to, and the totals the limits are judged against."""

    order_number: str
    currency: str
    lines: list[dict[str, Any]]
    amount: Decimal
    left: Decimal
    order_automatic: Decimal
    customer_automatic: Decimal
    limit: Decimal | None
    window_closes: datetime

    @property
    def needs_approval(self) -> bool:
        if self.limit is None:
            return True
        return max(self.order_automatic, self.customer_automatic) + self.amount > self.limit

    def approval_reason(self) -> str:
        if self.limit is None:
            return f"Refunds in {self.currency} always need a colleague's approval."
        return (
            f"A refund of {money(self.amount)} {self.currency} on order {self.order_number} needs a colleague's "
            f"approval: with {money(self.order_automatic)} {self.currency} already refunded on this order and "
            f"{money(self.customer_automatic)} {self.currency} on the account in the last few days, it would pass "
            f"the {money(self.limit)} {self.currency} limit for automatic refunds."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_number": self.order_number,
            "currency": self.currency,
            "items": self.lines,
            "items_text": ", ".join(f"{line['qty']} x {line['name']}" for line in self.lines),
            "amount": money(self.amount),
            "refundable_left": money(self.left),
            "refunded_automatically": {
                "order": money(self.order_automatic),
                "customer": money(self.customer_automatic),
            },
            "limit": None if self.limit is None else money(self.limit),
            "needs_approval": self.needs_approval,
            "window_closes": when(self.window_closes.date()),
        }


async def assess_refund(
    conn: asyncpg.Connection,
    customer_id: str,
    order: asyncpg.Record,
    items: list[RefundItem] | None,
    policy: RefundPolicy,
) -> Assessment:
    """Judge a refund of `items` (None: every line not yet refunded) of `order` against `policy`.

    Refuses (`not_allowed`) an order outside the refundable statuses or the return window and a
    line already refunded; `invalid` for items the order does not have. The limits are not applied
    here: the caller decides whether `needs_approval` refuses (the agent) or not (a human approved).
    """
    number = order["order_number"]
    if order["status"] not in policy.refundable_statuses:
        why = _WHY_NOT.get(order["status"], f"it is {order['status']}")
        raise ToolError("not_allowed", f"Order {number} cannot be refunded: {why}.")
    delivered_at = await conn.fetchval(
        "SELECT max(delivered_at) FROM commerce.shipments WHERE order_number = $1", number
    )
    delivered_at = delivered_at or order["updated_at"]
    closes = delivered_at + policy.return_window
    if policy.clock() > closes:
        raise ToolError(
            "not_allowed",
            f"Order {number} was delivered on {delivered_at.date().isoformat()}; refunds are possible for "
            f"{policy.return_window.days} days after delivery, and that window closed on {closes.date().isoformat()}.",
        )
    lines = await conn.fetch(
        "SELECT sku, name, qty, unit_price FROM commerce.order_items WHERE order_number = $1 ORDER BY sku", number
    )
    refunded: dict[str, int] = {}
    for (done,) in await conn.fetch("SELECT items FROM commerce.refunds WHERE order_number = $1", number):
        for item in json.loads(done):
            refunded[item["sku"]] = refunded.get(item["sku"], 0) + item["qty"]
    wanted = match_lines(number, lines, refunded, items)
    amount = sum((line["unit_price"] * qty for line, qty in wanted), Decimal(0))
    payment = await conn.fetchrow(_PAYMENT, number)
    left = Decimal(0) if payment is None or payment["status"] == "failed" else payment["amount"] - payment["refunded"]
    if amount > left:
        raise ToolError(
            "not_allowed",
            f"At most {money(left)} {order['currency']} can be refunded on order {number}"
            + (
                ""
                if payment is None
                else f" ({money(payment['refunded'])} of {money(payment['amount'])} already refunded)"
            )
            + f"; the items named come to {money(amount)} {order['currency']}.",
        )
    order_automatic = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM commerce.refunds WHERE order_number = $1 AND automatic", number
    )
    customer_automatic = await conn.fetchval(
        "SELECT coalesce(sum(r.amount), 0) FROM commerce.refunds r JOIN commerce.orders o USING (order_number) "
        "WHERE o.customer_id = $1 AND o.currency = $2 AND r.automatic AND r.created_at > $3",
        customer_id,
        order["currency"],
        policy.clock() - policy.customer_window,
    )
    return Assessment(
        order_number=number,
        currency=order["currency"],
        lines=[
            {"sku": line["sku"], "name": line["name"], "qty": qty, "amount": money(line["unit_price"] * qty)}
            for line, qty in wanted
        ],
        amount=amount,
        left=left,
        order_automatic=order_automatic,
        customer_automatic=customer_automatic,
        limit=policy.limit.get(order["currency"]),
        window_closes=closes,
    )


def match_lines(
    number: str,
    lines: list[asyncpg.Record],
    done: dict[str, int],
    items: list[RefundItem] | None,
    verb: str = "refunded",
) -> list[tuple[asyncpg.Record, int]]:
    """The order lines the customer named, each with its quantity; `done` is what was already `verb` per SKU.

    Shared by refunds, returns and exchanges, so "the socks" names the same line for each of them.
    """
    open_qty = {line["sku"]: line["qty"] - done.get(line["sku"], 0) for line in lines}
    if items is None:
        wanted = [(line, open_qty[line["sku"]]) for line in lines if open_qty[line["sku"]] > 0]
        if not wanted:
            raise ToolError("not_allowed", f"Every item of order {number} has already been {verb}.")
        return wanted
    listing = "; ".join(line["name"] for line in lines)
    chosen: dict[str, tuple[asyncpg.Record, int]] = {}
    for item in items:
        named = item.sku or item.name or ""
        found = [line for line in lines if item.sku and line["sku"].upper() == item.sku.strip().upper()]
        if not found and item.name:
            found = best_named(item.name, lines)
        if not found:
            raise ToolError("invalid", f"Order {number} has no item {named!r}; its items are: {listing}.")
        if len(found) > 1:
            names = " or ".join(line["name"] for line in found)
            raise ToolError("invalid", f"{named!r} could be {names}; which one should be {verb}?")
        line = found[0]
        before = chosen.get(line["sku"], (line, 0))[1]
        qty = before + (item.qty if item.qty is not None else open_qty[line["sku"]] - before)
        if open_qty[line["sku"]] <= 0:
            raise ToolError("not_allowed", f"{line['name']} on order {number} has already been {verb}.")
        if qty > open_qty[line["sku"]]:
            raise ToolError(
                "not_allowed",
                f"Only {open_qty[line['sku']]} of {line['name']} on order {number} can still be {verb}.",
            )
        chosen[line["sku"]] = (line, qty)
    return list(chosen.values())


def best_named(name: str, rows: list[Any]) -> list[Any]:
    """The rows (with a "name") whose names share the most words with `name`; [] when none shares one."""
    words = name_words(name)
    found = [row for row in rows if words and words & name_words(row["name"])]
    if len(found) > 1:  # the most specific wins: "wool socks" over "wool throw" when both share "wool"
        best = max(len(words & name_words(row["name"])) for row in found)
        found = [row for row in found if len(words & name_words(row["name"])) == best]
    return found


async def refund_payment(
    conn: asyncpg.Connection,
    order: asyncpg.Record,
    amount: Decimal | None,
    reason: str,
    idempotency_key: str,
    required: bool = True,
    items: list[dict[str, Any]] | None = None,
    automatic: bool = False,
    approved_by: str | None = None,
) -> dict[str, Any] | None:
    """Refund `amount` (None: all that is left) of the order's captured payment, inside the caller's transaction.

    The money mover only: the refund policy is the caller's (`Refund` judges it; a cancellation of
    an unshipped order refunds everything captured). With `required=False` an order with nothing to
    refund returns None instead of refusing (a cancelled pending order was never charged).
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
        "INSERT INTO commerce.refunds (order_number, payment_id, amount, reason, status, idempotency_key, items, "
        "automatic, approved_by) VALUES ($1, $2, $3, $4, 'pending', $5, $6::jsonb, $7, $8) "
        "RETURNING refund_id, created_at",
        order["order_number"],
        payment["payment_id"],
        amount,
        reason,
        idempotency_key,
        json.dumps([{"sku": i["sku"], "qty": i["qty"]} for i in items or []]),
        automatic,
        approved_by,
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


class ItemsArguments(StrictModel):
    order_number: OrderNumber
    items: list[RefundItem] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description='the order lines: [{"sku" or "name", "qty"?}] or one line of text ("the socks and 1 mug"); '
        "default: every line not yet refunded",
    )

    @field_validator("items", mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        return parse_item_names(value)


class RefundArguments(ItemsArguments):
    amount: Decimal | None = Field(
        default=None,
        gt=0,
        max_digits=12,
        decimal_places=2,
        description="what the customer expects; when given it must equal what the items cost (never the amount paid)",
    )
    currency: str | None = Field(default=None, description="when given, must be the order's currency (ISO code)")
    reason: str = Field(min_length=1, max_length=500)
    approved_by: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the human who approved a refund above the automatic limit; set only by the workspace",
    )


class Refund(CommerceTool):
    name = "payments.refund"
    writes = True
    description = (
        "Refund items of one of the caller's delivered orders, within 30 days of delivery, to the original payment "
        "method; the amount is what the items cost. Above the automatic limit it is refused as needs_approval. "
        "Arguments: order_number, items (default all), reason, amount (optional check), currency (optional)."
    )
    Arguments = RefundArguments

    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 5.0, policy: RefundPolicy | None = None) -> None:
        super().__init__(pool, timeout_s)
        self.policy = policy or RefundPolicy()

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: RefundArguments) -> dict[str, Any]:
        # the customer row serialises every refund of this customer, so the per-customer window and the
        # per-order totals are read and then added to by one transaction at a time
        await conn.execute("SELECT 1 FROM commerce.customers WHERE customer_id = $1 FOR UPDATE", call.customer_id)
        order = await owned_order(conn, call.customer_id, args.order_number, lock=True)
        if args.currency is not None and args.currency.strip().upper() != order["currency"]:
            raise ToolError("invalid", f"order {args.order_number} was paid in {order['currency']}")
        assessment = await assess_refund(conn, call.customer_id, order, args.items, self.policy)
        if args.amount is not None and args.amount != assessment.amount:
            raise ToolError(
                "invalid",
                f"The items named ({assessment.as_dict()['items_text']}) come to {money(assessment.amount)} "
                f"{order['currency']}, not {money(args.amount)}.",
            )
        if args.approved_by is None and assessment.needs_approval:
            raise ToolError("needs_approval", assessment.approval_reason())
        result = await refund_payment(
            conn,
            order,
            assessment.amount,
            args.reason,
            call.idempotency_key,
            items=assessment.lines,
            automatic=args.approved_by is None,
            approved_by=args.approved_by,
        )
        assert result is not None  # required=True refuses instead of returning None
        return {**result, "items": assessment.lines}


class RefundQuote(CommerceTool):
    name = "payments.refund_quote"
    description = (
        "What a refund of items of one of the caller's orders would come to, and whether the agent may issue it "
        "alone (needs_approval), with what was already refunded automatically on the order and the account. "
        "Refuses like payments.refund when the order cannot be refunded. Arguments: order_number, items."
    )
    Arguments = ItemsArguments

    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 5.0, policy: RefundPolicy | None = None) -> None:
        super().__init__(pool, timeout_s)
        self.policy = policy or RefundPolicy()

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: ItemsArguments) -> dict[str, Any]:
        order = await owned_order(conn, call.customer_id, args.order_number)
        return (await assess_refund(conn, call.customer_id, order, args.items, self.policy)).as_dict()


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
