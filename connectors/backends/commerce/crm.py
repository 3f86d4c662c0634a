"""CRM tools: who the customer is, identity checks, notes and cases — always the caller's own record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import Field, model_validator

from connectors.backends.commerce._base import CommerceTool, NoArguments, OrderNumber, StrictModel, when
from connectors.protocols import ToolCall, ToolError

__all__ = ["AddNote", "CreateCase", "IdentityLockout", "LookupCustomer", "VerifyIdentity", "mask_email"]


def mask_email(email: str) -> str:
    """a***@example.com: enough for the customer to recognise, too little to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _normal_zip(text: str) -> str:
    return "".join(text.split()).upper()


async def _require_customer(conn: asyncpg.Connection, customer_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM commerce.customers WHERE customer_id = $1", customer_id)
    if row is None:
        raise ToolError("not_found", "No customer account was found for you.")
    return row


class LookupCustomer(CommerceTool):
    name = "crm.lookup_customer"
    description = "The caller's own customer record: name, tier, masked email, default city. No arguments."
    Arguments = NoArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: NoArguments) -> dict[str, Any]:
        customer = await _require_customer(conn, call.customer_id)
        city = await conn.fetchval(
            "SELECT city FROM commerce.addresses WHERE customer_id = $1 AND kind = 'shipping' "
            "ORDER BY is_default DESC, address_id LIMIT 1",
            call.customer_id,
        )
        return {
            "customer_id": customer["customer_id"],
            "name": customer["name"],
            "tier": customer["tier"],
            "email": mask_email(customer["email"]),
            "city": city,
            "customer_since": when(customer["created_at"].date()),
        }


class VerifyIdentityArguments(StrictModel):
    order_number: OrderNumber
    email: str | None = Field(default=None, max_length=320)
    zip: str | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _one_secret(self) -> VerifyIdentityArguments:
        if not self.email and not self.zip:
            raise ValueError("give the email address or the ZIP code on the account, with the order number")
        return self


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IdentityLockout:
    """How many failed identity checks lock account actions, and for how long.

    Within any `window`, `max_per_customer` failed checks for one customer lock that customer's
    checks, and `max_per_source` failed checks from one channel address (whichever customers they
    were for) lock that address's checks, until enough of those failures are older than the window.
    `clock` is injectable so tests move time instead of sleeping.
    """

    max_per_customer: int = 5
    max_per_source: int = 10
    window: timedelta = timedelta(hours=24)
    clock: Callable[[], datetime] = field(default=_utcnow, compare=False)

    def __post_init__(self) -> None:
        if self.max_per_customer < 1 or self.max_per_source < 1 or self.window <= timedelta(0):
            raise ValueError("identity lockout: thresholds must be at least 1 and the window positive")


class VerifyIdentity(CommerceTool):
    """The identity check, with the lockout that stops it being guessed (issue 15).

    The count of failed checks lives here, in `commerce.identity_failures`, because this backend
    owns the check: a session, a channel, a worker are all gone or different by the next attempt,
    while every attempt, from anywhere, passes through this table. The lock is checked BEFORE the
    details are compared, so once locked even the right answer gets `{verified: false, locked:
    true}` and a guesser learns nothing from a hit. Checks of one customer and of one source are
    serialised by transaction-scoped advisory locks (always customer first, then source, so two
    checks never wait on each other in a cycle): concurrent workers cannot slip extra guesses past
    the threshold.

    A success clears the customer's own count (it proves the earlier misses were typos of someone
    who knows the answer, and only the right answer for that customer can clear it), but never the
    source's: otherwise a guesser could wipe the record of their address by verifying their own
    account between guesses at other people's.
    """

    name = "crm.verify_identity"
    description = (
        "Check that the caller knows an order number of theirs AND the account's email or ZIP code. "
        "Arguments: order_number, and email or zip. "
        "Returns {verified: true|false}, never why; after too many failures {verified: false, locked: true, "
        "locked_until}, whatever the details."
    )
    Arguments = VerifyIdentityArguments

    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 5.0, lockout: IdentityLockout | None = None) -> None:
        super().__init__(pool, timeout_s)
        self.lockout = lockout or IdentityLockout()

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: VerifyIdentityArguments) -> dict[str, Any]:
        lockout = self.lockout
        now = lockout.clock()
        since = now - lockout.window
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('identity-customer:' || $1, 0))", call.customer_id
            )
            source = call.source[:400] if call.source else None  # the runtime's, never an argument
            if source:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('identity-source:' || $1, 0))", source
                )
            until = await self._locked_until(conn, call.customer_id, source, since)
            if until is not None:
                return {"verified": False, "locked": True, "locked_until": when(until)}
            verified = await self._matches(conn, call.customer_id, args)
            if verified:
                await conn.execute(
                    "UPDATE commerce.identity_failures SET customer_cleared_at = $2 "
                    "WHERE customer_id = $1 AND customer_cleared_at IS NULL",
                    call.customer_id,
                    now,
                )
                return {"verified": True}
            await conn.execute(
                "INSERT INTO commerce.identity_failures (customer_id, source, failed_at) VALUES ($1, $2, $3)",
                call.customer_id,
                source,
                now,
            )
            until = await self._locked_until(conn, call.customer_id, source, since)
        if until is not None:  # this miss was the last one allowed: say so now, not on the next try
            return {"verified": False, "locked": True, "locked_until": when(until)}
        return {"verified": False}

    async def _locked_until(
        self, conn: asyncpg.Connection, customer_id: str, source: str | None, since: datetime
    ) -> datetime | None:
        """When the later of the two locks ends, or None when neither holds.

        A lock holds while `max` failures lie in the window; it ends when the max-th newest of them
        leaves the window, because from then on fewer than `max` remain.
        """
        lockout = self.lockout
        ends = [
            await conn.fetchval(
                "SELECT failed_at FROM commerce.identity_failures "
                "WHERE customer_id = $1 AND customer_cleared_at IS NULL AND failed_at > $2 "
                "ORDER BY failed_at DESC OFFSET $3 LIMIT 1",
                customer_id,
                since,
                lockout.max_per_customer - 1,
            )
        ]
        if source:
            ends.append(
                await conn.fetchval(
                    "SELECT failed_at FROM commerce.identity_failures WHERE source = $1 AND failed_at > $2 "
                    "ORDER BY failed_at DESC OFFSET $3 LIMIT 1",
                    source,
                    since,
                    lockout.max_per_source - 1,
                )
            )
        held = [end + lockout.window for end in ends if end is not None]
        return max(held) if held else None

    @staticmethod
    async def _matches(conn: asyncpg.Connection, customer_id: str, args: VerifyIdentityArguments) -> bool:
        row = await conn.fetchrow(
            "SELECT c.email, c.zip FROM commerce.customers c JOIN commerce.orders o USING (customer_id) "
            "WHERE c.customer_id = $1 AND o.order_number = $2",
            customer_id,
            args.order_number,
        )
        # every part is evaluated, and one boolean comes back: which part failed is not told
        order_ok = row is not None
        email_ok = args.email is None or (order_ok and args.email.casefold() == row["email"].casefold())
        zip_ok = args.zip is None or (order_ok and _normal_zip(args.zip) == _normal_zip(row["zip"]))
        return order_ok and email_ok and zip_ok


class AddNoteArguments(StrictModel):
    text: str = Field(min_length=1, max_length=2000)


class AddNote(CommerceTool):
    name = "crm.add_note"
    writes = True
    description = "Add a note to the caller's customer record. Arguments: text."
    Arguments = AddNoteArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: AddNoteArguments) -> dict[str, Any]:
        await _require_customer(conn, call.customer_id)
        row = await conn.fetchrow(
            "INSERT INTO commerce.notes (customer_id, text, idempotency_key) VALUES ($1, $2, $3) "
            "RETURNING note_id, created_at",
            call.customer_id,
            args.text,
            call.idempotency_key,
        )
        return {"note_id": row["note_id"], "created_at": when(row["created_at"])}


class CreateCaseArguments(StrictModel):
    subject: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=5000)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class CreateCase(CommerceTool):
    name = "crm.create_case"
    writes = True
    description = (
        "Open a support case for a human team on the caller's account. "
        "Arguments: subject, description, priority (low, normal, high, urgent; default normal)."
    )
    Arguments = CreateCaseArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: CreateCaseArguments) -> dict[str, Any]:
        await _require_customer(conn, call.customer_id)
        row = await conn.fetchrow(
            "INSERT INTO commerce.cases (customer_id, subject, description, priority, idempotency_key) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING case_id, status, created_at",
            call.customer_id,
            args.subject,
            args.description,
            args.priority,
            call.idempotency_key,
        )
        return {
            "case_id": row["case_id"],
            "status": row["status"],
            "priority": args.priority,
            "created_at": when(row["created_at"]),
        }
