"""The default e-commerce tenant's backend (schema `commerce`, migration 0002) and its tools.

`commerce_tools(pool)` gives every tool by name; they share one asyncpg pool that the caller
creates once (with `server_settings={"timezone": "UTC"}` for readable timestamps) and reuses.
Every tool acts only for `call.customer_id`, and every write happens once per idempotency key
(connectors/backends/commerce/_base.py). `seed.py` fills the tables with demo data (`supportflow seed`).
"""

from __future__ import annotations

import asyncpg

from connectors.backends.commerce._base import CommerceTool
from connectors.backends.commerce.crm import AddNote, CreateCase, IdentityLockout, LookupCustomer, VerifyIdentity
from connectors.backends.commerce.orders import (
    CancelOrder,
    ChangeAddress,
    CreateExchange,
    CreateReturn,
    ExchangeQuote,
    GetOrder,
    ItemChangesQuote,
    ListOrders,
    ModifyItems,
    ReturnQuote,
)
from connectors.backends.commerce.payments import PaymentStatus, Refund, RefundPolicy, RefundQuote, RefundStatus
from connectors.backends.commerce.seed import KNOWN_CUSTOMERS, seed_commerce
from connectors.protocols import Tool

__all__ = [
    "KNOWN_CUSTOMERS",
    "TOOL_CLASSES",
    "AddNote",
    "CancelOrder",
    "ChangeAddress",
    "CommerceTool",
    "CreateCase",
    "CreateExchange",
    "CreateReturn",
    "ExchangeQuote",
    "GetOrder",
    "IdentityLockout",
    "ItemChangesQuote",
    "ListOrders",
    "LookupCustomer",
    "ModifyItems",
    "PaymentStatus",
    "Refund",
    "RefundPolicy",
    "RefundQuote",
    "RefundStatus",
    "ReturnQuote",
    "VerifyIdentity",
    "commerce_tools",
    "seed_commerce",
]

TOOL_CLASSES: tuple[type[CommerceTool], ...] = (
    LookupCustomer,
    VerifyIdentity,
    AddNote,
    CreateCase,
    GetOrder,
    ListOrders,
    CancelOrder,
    ChangeAddress,
    ModifyItems,
    ItemChangesQuote,
    CreateReturn,
    ReturnQuote,
    CreateExchange,
    ExchangeQuote,
    Refund,
    RefundQuote,
    RefundStatus,
    PaymentStatus,
)


def commerce_tools(
    pool: asyncpg.Pool,
    timeout_s: float = 5.0,
    lockout: IdentityLockout | None = None,
    refund_policy: RefundPolicy | None = None,
) -> dict[str, Tool]:
    """Every commerce tool by its name (e.g. `payments.refund`), all on the one given pool.

    `lockout` sets the thresholds of `crm.verify_identity` (default: 5 failures per customer, 10 per
    source, in 24 hours); `refund_policy` is the tenant's refund rules (limits, windows, clock),
    shared by the refund, its quote, and the returns and exchanges (the return window).
    """
    policy = refund_policy or RefundPolicy()
    tools: dict[str, Tool] = {}
    for cls in TOOL_CLASSES:
        if cls is VerifyIdentity:
            tools[cls.name] = VerifyIdentity(pool, timeout_s, lockout)
        elif issubclass(cls, Refund | RefundQuote | CreateReturn | ReturnQuote | CreateExchange | ExchangeQuote):
            tools[cls.name] = cls(pool, timeout_s, policy)  # type: ignore[call-arg]
        else:
            tools[cls.name] = cls(pool, timeout_s)
    return tools
