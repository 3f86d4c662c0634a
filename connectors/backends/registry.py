"""The registry of backend tools the agent may call: the commerce backend and a tenant's REST tools.

A successful write is announced to the tenant's webhook subscribers (`connectors/backends/webhooks.py`,
`Settings.webhooks`): `payments.refund` as `refund.created`, `orders.cancel_order` as
`order.cancelled`, other writes under their tool name. The delivery id is the action's
idempotency key, so a replayed turn announces the same delivery and receivers drop the repeat.
The call only records the event on `sf.webhooks` and returns once the broker has it, before the
turn can be committed; the deliverer in the senders' process POSTs it (at least once, retried
across restarts) and dead-letters permanent refusals on `sf.dlq`.

Built once per worker from settings and handed to operators in their context. Connections open
on first use, on the event loop that uses them (an asyncpg pool for the commerce backend in
PostgreSQL, one httpx client for the REST tools), and are reused by every call after that. With
no database configured the commerce tools are simply absent: `get` answers None and the
`execute` operator reports the action as failed, so the turn goes to a human.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.postgres.pools import keep_no_session_state
from connectors.protocols import Tool, ToolCall
from schemas import WebhookEvent

log = logging.getLogger(__name__)

__all__ = ["AnnouncingTool", "ToolRegistry"]

EVENT_TYPES = {"payments.refund": "refund.created", "orders.cancel_order": "order.cancelled"}


class AnnouncingTool:
    """A write tool whose successful calls are recorded in the durable webhook outbox before they return."""

    def __init__(self, tool: Tool, outbox: Any) -> None:
        self.inner = tool
        self.name = tool.name
        self.writes = tool.writes
        self.description = tool.description
        self.outbox = outbox

    async def call(self, call: ToolCall) -> dict[str, Any]:
        result = await self.inner.call(call)
        payload = {"tool": call.name, "customer_id": call.customer_id, "arguments": call.arguments, "result": result}
        event = WebhookEvent(
            delivery_id=call.idempotency_key,
            event_type=EVENT_TYPES.get(call.name, call.name),
            customer_id=call.customer_id,
            data=payload,
        )
        # awaited: a worker killed after this line has the event on the topic; one killed before it
        # has not committed the turn either, and the replayed turn records it (same key, same id)
        await self.outbox.record(event)
        return result


class ToolRegistry:
    """Tools by name; `tools` fixes them (tests), else they come from `database_url` and `rest_tools_file`."""

    def __init__(
        self,
        tools: Mapping[str, Tool] | None = None,
        database_url: str | None = None,
        rest_tools_file: Path | None = None,
        pool_size: int = 5,
        outbox: Any = None,
        identity_lockout: Any = None,
    ) -> None:
        self._tools: dict[str, Tool] = dict(tools or {})
        self._fixed = tools is not None
        self.database_url = database_url
        self.rest_tools_file = rest_tools_file
        self.pool_size = pool_size
        self._pool: Any = None
        self._rest: Any = None
        self._lock: asyncio.Lock | None = None  # created on the loop that first uses it
        self.outbox = outbox  # a KafkaWebhookOutbox when webhooks are configured
        self.identity_lockout = identity_lockout  # commerce.IdentityLockout; None: its defaults
        self._loaded = False

    @classmethod
    def from_settings(cls, settings: Any) -> ToolRegistry:
        url = getattr(settings, "database_url", None)
        outbox = None
        if getattr(settings, "webhooks", None):
            from connectors.backends.webhooks import KafkaWebhookOutbox

            outbox = KafkaWebhookOutbox(settings.kafka_client_config(), exact_offsets=settings.exact_offsets)
        lockout = None
        if url is not None and hasattr(settings, "identity_max_failures_per_customer"):
            from datetime import timedelta

            from connectors.backends.commerce import IdentityLockout

            lockout = IdentityLockout(
                max_per_customer=settings.identity_max_failures_per_customer,
                max_per_source=settings.identity_max_failures_per_source,
                window=timedelta(hours=settings.identity_lockout_hours),
            )
        return cls(
            identity_lockout=lockout,
            database_url=url.get_secret_value() if url is not None else None,
            rest_tools_file=getattr(settings, "rest_tools_file", None),
            pool_size=getattr(settings, "database_pool_size", 5),  # the worker's concurrency needs the whole pool
            outbox=outbox,
        )

    async def get(self, name: str) -> Tool | None:
        await self._load()
        tool = self._tools.get(name)
        if tool is not None and tool.writes and self.outbox is not None:
            return AnnouncingTool(tool, self.outbox)
        return tool

    async def names(self) -> list[str]:
        await self._load()
        return sorted(self._tools)

    async def _load(self) -> None:
        if self._loaded or self._fixed:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._loaded:
                return
            if self.database_url:
                try:
                    import asyncpg

                    from connectors.backends.commerce import commerce_tools

                    self._pool = await asyncpg.create_pool(
                        self.database_url, min_size=1, max_size=self.pool_size, reset=keep_no_session_state
                    )
                    self._tools.update(commerce_tools(self._pool, lockout=self.identity_lockout))
                except Exception:
                    log.exception("the commerce backend is unreachable; its tools are unavailable for now")
                    await self._close_pool()
                    return  # not marked loaded: the next call tries again
            if self.rest_tools_file is not None:
                from connectors.backends.rest_tools import load_rest_tools

                self._rest = load_rest_tools(Path(self.rest_tools_file))
                self._tools.update(self._rest.tools)
            self._loaded = True

    async def _close_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def close(self) -> None:
        if self.outbox is not None:
            await self.outbox.close()
        await self._close_pool()
        if self._rest is not None:
            rest, self._rest = self._rest, None
            await rest.aclose()
