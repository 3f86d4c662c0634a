"""PostgreSQL side of the channel senders: the delivery ledger and the developer outbox.

The ledger (`channel_deliveries`) makes delivery idempotent by `reply_id`: a sender claims the
reply before calling the provider and records the provider's id after. A redelivered
`sf.outbound` record whose reply is already delivered (or failed for good) is skipped.

The crash window, honestly: if the process dies after the provider accepted a message and
before `delivered()` commits, the claim stays `sending` and the replayed record is sent again,
so a customer may get one duplicate. Twilio's Messages API takes no idempotency key, so there
is nothing to close that window with on its side; Slack and Meta offer none for these calls
either.

The outbox (`channel_outbox`) receives the replies of channels with no provider credentials
configured (the embedded default), so `supportflow outbox` and `GET /v1/outbox` show what would
have been sent; an email entry keeps its HTML alternative and its headers (threading included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from schemas import OutboundMessage

__all__ = ["DeliveryLedger", "Outbox", "OutboxRow", "list_outbox"]

# A claim succeeds unless the reply is finished; `failed` is finished too, so replaying a
# topic does not dead-letter the same reply again.
_CLAIM = """
INSERT INTO channel_deliveries (reply_id, channel, provider) VALUES ($1, $2, $3)
ON CONFLICT (reply_id) DO UPDATE
SET attempts = channel_deliveries.attempts + 1, provider = excluded.provider, claimed_at = now()
WHERE channel_deliveries.status = 'sending'
RETURNING attempts
"""

_DELIVERED = """
UPDATE channel_deliveries
SET status = 'delivered', provider_message_id = $2, delivered_at = now(), error = NULL
WHERE reply_id = $1
"""

_FAILED = "UPDATE channel_deliveries SET status = 'failed', error = $2 WHERE reply_id = $1 AND status = 'sending'"

_OUTBOX_INSERT = """
INSERT INTO channel_outbox (reply_id, channel, recipient, text, parts, subject, html, headers)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb)
ON CONFLICT (reply_id) DO NOTHING
"""


class DeliveryLedger:
    """Claims and outcomes of deliveries in `channel_deliveries`, keyed by reply_id."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, message: OutboundMessage, provider: str) -> bool:
        """Whether to send `message` now: False when it was already delivered or failed for good."""
        attempts = await self.pool.fetchval(_CLAIM, message.reply_id, message.channel, provider)
        return attempts is not None

    async def delivered(self, reply_id: str, provider_message_id: str) -> None:
        await self.pool.execute(_DELIVERED, reply_id, provider_message_id)

    async def failed(self, reply_id: str, error: str) -> None:
        await self.pool.execute(_FAILED, reply_id, error[:2000])

    async def status(self, reply_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM channel_deliveries WHERE reply_id = $1", reply_id)
        return dict(row) if row is not None else None


class Outbox:
    """The sender of channels without credentials: the reply is stored, not sent."""

    provider = "outbox"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def send(self, message: OutboundMessage) -> str:
        await self.store(message)
        return f"outbox:{message.reply_id}"

    async def store(
        self,
        message: OutboundMessage,
        subject: str | None = None,
        html: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Keep the reply; an email keeps its HTML alternative and the headers it would have had."""
        parts = message.parts or [message.text]
        await self.pool.execute(
            _OUTBOX_INSERT,
            message.reply_id,
            message.channel,
            message.recipient,
            message.text,
            json.dumps(parts),
            subject or message.subject,
            html,
            json.dumps(headers or {}),
        )

    async def aclose(self) -> None:
        """The pool belongs to the caller."""


@dataclass(frozen=True)
class OutboxRow:
    reply_id: str
    channel: str
    recipient: str
    text: str
    parts: list[str]
    subject: str | None
    created_at: datetime
    status: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


async def list_outbox(conn: asyncpg.Connection, limit: int = 20, channel: str | None = None) -> list[OutboxRow]:
    """The newest outbox rows first; none when the migration creating the table was not applied."""
    if not await conn.fetchval("SELECT to_regclass('channel_outbox') IS NOT NULL"):
        return []
    # to_jsonb: a database still without 0004's columns (html, headers) reads the same way
    rows = await conn.fetch(
        "SELECT to_jsonb(o) - 'created_at' AS row, o.created_at FROM channel_outbox o"
        " WHERE $1::text IS NULL OR o.channel = $1 ORDER BY o.created_at DESC, o.reply_id LIMIT $2",
        channel,
        limit,
    )
    fields = {f for f in OutboxRow.__dataclass_fields__ if f != "created_at"}
    out = []
    for row in rows:
        data = json.loads(row["row"])
        out.append(OutboxRow(created_at=row["created_at"], **{k: v for k, v in data.items() if k in fields}))
    return out
