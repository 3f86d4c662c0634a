"""Helpers of the webhook deliverer's tests: settings, events recorded as the worker does, the deliverer in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from connectors.backends.registry import ToolRegistry
from connectors.backends.webhooks import KafkaWebhookOutbox
from connectors.kafka import TopicPlan, create_topics
from connectors.protocols import ToolCall
from pipelines.runtime.settings import PROJECT_DIR, Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.webhooks import run_webhooks

TOPOLOGY = load_topology(PROJECT_DIR / "topology.yaml")
SECRET = "whsec-deliverer-0123456789"


def webhook_settings(bootstrap: str, receiver_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        kafka_exact_offsets=True,
        data_dir=tmp_path,
        webhooks=[{"url": receiver_url, "secret": SECRET, "events": ["*"]}],
        webhook_retry_initial_s=0.05,
        **extra,
    )


def create_webhook_topics(s: Settings) -> None:
    create_topics(s.kafka_client_config(), [TopicPlan("sf.webhooks", 4), TopicPlan("sf.dlq", 4)])


class CancelOrder:
    """A write tool standing in for the backend: the announcement of its success is what is tested."""

    name = "orders.cancel_order"
    writes = True
    description = "cancel an order"

    async def call(self, call: ToolCall) -> dict[str, Any]:
        return {"order_number": call.arguments["order_number"], "status": "cancelled"}


async def cancel_orders(s: Settings, *calls: tuple[str, str]) -> None:
    """Cancel orders through the tool registry, as the worker's `execute` does: (order, idempotency key)."""
    registry = ToolRegistry(
        tools={"orders.cancel_order": CancelOrder()},
        outbox=KafkaWebhookOutbox(s.kafka_client_config(), exact_offsets=True),
    )
    try:
        tool = await registry.get("orders.cancel_order")
        assert tool is not None
        for order, key in calls:
            await tool.call(ToolCall("orders.cancel_order", {"order_number": order}, "C000001", key))
    finally:
        await registry.close()


@asynccontextmanager
async def deliverer(s: Settings) -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_webhooks(s, TOPOLOGY, stop, ready))
    await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED, timeout=60)
    assert not task.done(), task.exception()
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
