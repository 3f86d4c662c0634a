"""CRM tools: who the customer is, identity checks, notes and cases — always the caller's own record."""

from __future__ import annotations

from typing import Any, Literal

import asyncpg
from pydantic import Field, model_validator

from connectors.backends.commerce._base import CommerceTool, NoArguments, OrderNumber, StrictModel, when
from connectors.protocols import ToolCall, ToolError

__all__ = ["AddNote", "CreateCase", "LookupCustomer", "VerifyIdentity", "mask_email"]


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


class VerifyIdentity(CommerceTool):
    name = "crm.verify_identity"
    description = (
        "Check that the caller knows an order number of theirs AND the account's email or ZIP code. "
        "Arguments: order_number, and email or zip. Returns {verified: true|false}, never why."
    )
    Arguments = VerifyIdentityArguments

    async def run(self, conn: asyncpg.Connection, call: ToolCall, args: VerifyIdentityArguments) -> dict[str, Any]:
        row = await conn.fetchrow(
            "SELECT c.email, c.zip FROM commerce.customers c JOIN commerce.orders o USING (customer_id) "
            "WHERE c.customer_id = $1 AND o.order_number = $2",
            call.customer_id,
            args.order_number,
        )
        # every part is evaluated, and one boolean comes back: which part failed is not told
        order_ok = row is not None
        email_ok = args.email is None or (order_ok and args.email.casefold() == row["email"].casefold())
        zip_ok = args.zip is None or (order_ok and _normal_zip(args.zip) == _normal_zip(row["zip"]))
        return {"verified": order_ok and email_ok and zip_ok}


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
