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

Voice replies are spoken within the call by the ingress (connectors/channels/routes.py), which
then marks them `delivered` by provider `twilio-call` (`mark_spoken`). The senders' voice route
(`CallOutbox`) keeps in the outbox only the replies the call did not speak: those that came after
the caller was transferred or hung up, for a person to call back. The two meet on the reply's
ledger row, locked by both, so whichever comes second sees the other's result; a reply that
reaches the outbox a moment before the ingress speaks it is taken out again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from schemas import OutboundMessage

__all__ = [
    "SPOKEN_PROVIDER",
    "CallOutbox",
    "DeliveryLedger",
    "DeliveryRow",
    "Outbox",
    "OutboxRow",
    "list_deliveries",
    "list_outbox",
    "mark_spoken",
]

# A claim succeeds unless the reply is finished; `failed` is finished too, so replaying a
# topic does not dead-letter the same reply again.
_CLAIM = """
INSERT INTO channel_deliveries (reply_id, channel, provider) VALUES ($1, $2, $3)
ON CONFLICT (reply_id) DO UPDATE
SET attempts = channel_deliveries.attempts + 1, provider = excluded.provider, claimed_at = now()
WHERE channel_deliveries.status = 'sending'
RETURNING attempts
"""

# only a claim still `sending` is completed: a voice reply the ingress marked spoken meanwhile stays so
_DELIVERED = """
UPDATE channel_deliveries
SET status = 'delivered', provider_message_id = $2, delivered_at = now(), error = NULL
WHERE reply_id = $1 AND status = 'sending'
"""

SPOKEN_PROVIDER = "twilio-call"

_SPOKEN = """
INSERT INTO channel_deliveries (reply_id, channel, provider, provider_message_id, status, delivered_at)
VALUES ($1, 'voice', 'twilio-call', $2, 'delivered', now())
ON CONFLICT (reply_id) DO UPDATE
SET provider = 'twilio-call', provider_message_id = excluded.provider_message_id, status = 'delivered',
    delivered_at = COALESCE(channel_deliveries.delivered_at, now()), error = NULL
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
        conn: asyncpg.Connection | None = None,
    ) -> None:
        """Keep the reply; an email keeps its HTML alternative and the headers it would have had."""
        parts = message.parts or [message.text]
        await (conn or self.pool).execute(
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


class CallOutbox(Outbox):
    """The voice route: a reply spoken in the call is done; one the call never heard goes to the outbox.

    Returns `call:<CallSid>` for a spoken reply (the ledger row says so already), else the outbox id.
    """

    async def send(self, message: OutboundMessage) -> str:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT provider, provider_message_id FROM channel_deliveries WHERE reply_id = $1 FOR UPDATE",
                message.reply_id,
            )
            if row is not None and row["provider"] == SPOKEN_PROVIDER:
                return str(row["provider_message_id"])
            await self.store(message, conn=conn)
        return f"outbox:{message.reply_id}"


async def mark_spoken(pool: asyncpg.Pool, reply_id: str, call_sid: str) -> None:
    """The ingress spoke `reply_id` in call `call_sid`: delivered, and not an outbox row."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SPOKEN, reply_id, f"call:{call_sid}")
        await conn.execute("DELETE FROM channel_outbox WHERE reply_id = $1", reply_id)


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


@dataclass(frozen=True)
class DeliveryRow:
    reply_id: str
    channel: str
    provider: str
    status: str
    provider_message_id: str | None
    claimed_at: datetime
    # the provider's reported status of each part (message sid → status, error code); empty until a callback
    parts: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "claimed_at": self.claimed_at.isoformat()}


_DELIVERIES = """
SELECT d.reply_id, d.channel, d.provider, d.status, d.provider_message_id, d.claimed_at,
       COALESCE((SELECT jsonb_agg(jsonb_build_object('message_sid', sid, 'status', s.status, 'error_code', s.error_code)
                                  ORDER BY ord)
                 FROM unnest(string_to_array(d.provider_message_id, ',')) WITH ORDINALITY AS p(sid, ord)
                 JOIN delivery_statuses s ON s.message_sid = p.sid), '[]'::jsonb)::text AS parts
FROM channel_deliveries d
WHERE $1::text IS NULL OR d.channel = $1
ORDER BY d.claimed_at DESC, d.reply_id
LIMIT $2
"""


async def list_deliveries(conn: asyncpg.Connection, limit: int = 20, channel: str | None = None) -> list[DeliveryRow]:
    """The newest deliveries first, each with its parts' provider statuses (from the status callbacks)."""
    if not await conn.fetchval("SELECT to_regclass('delivery_statuses') IS NOT NULL"):
        return []
    rows = await conn.fetch(_DELIVERIES, channel, limit)
    return [DeliveryRow(**{**dict(row), "parts": json.loads(row["parts"])}) for row in rows]
