"""Helpers of the channel senders' tests: replies onto sf.outbound, the senders in process, the ledger's rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from connectors.kafka import TopicPlan, create_topics
from pipelines.runtime.settings import PROJECT_DIR, Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.senders import run_senders
from schemas import OutboundMessage
from tests.support.stream import produce

TOPOLOGY = load_topology(PROJECT_DIR / "topology.yaml")


def outbound(
    n: int, channel: str, recipient: str, text: str, parts: list[str] | None = None, verified: bool = True
) -> OutboundMessage:
    """A reply to `recipient`, verified as the pipeline marks an address a channel vouched for, unless told not."""
    return OutboundMessage(
        reply_id=f"reply-{n}",
        in_reply_to=f"msg-{n}",
        conversation_id=f"conv-{n}",
        customer_id=f"C00000{n}",
        channel=channel,  # type: ignore[arg-type]
        recipient=recipient,
        recipient_verified=verified,
        text=text,
        parts=parts or [],
    )


@asynccontextmanager
async def senders(s: Settings) -> AsyncIterator[None]:
    create_topics(s.kafka_client_config(), [TopicPlan("sf.outbound", 8), TopicPlan("sf.dlq", 4)])
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_senders(s, TOPOLOGY, stop, ready, retry_initial_s=0.05))
    await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED, timeout=60)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def send(s: Settings, *messages: OutboundMessage) -> None:
    records = [(m.partition_key(), m.to_bytes()) for m in messages]
    await asyncio.to_thread(produce, str(s.kafka_bootstrap_servers), "sf.outbound", records)


async def deliveries(dsn: str) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('channel_deliveries') IS NOT NULL"):
            return {}
        return {r["reply_id"]: dict(r) for r in await conn.fetch("SELECT * FROM channel_deliveries")}
    finally:
        await conn.close()


async def eventually(dsn: str, done: Callable[[dict[str, dict[str, Any]]], bool], timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await deliveries(dsn)
        if done(rows):
            return rows
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.2)


def finished(*reply_ids: str, status: str = "delivered") -> Callable[[dict[str, dict[str, Any]]], bool]:
    return lambda rows: all(rows.get(r, {}).get("status") == status for r in reply_ids)
