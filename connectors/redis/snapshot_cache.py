"""A short-lived cache of conversation snapshots, so a busy web page does not query PostgreSQL
on every refresh.

In process for the embedded stack; in Redis when several web servers should share it. Both
store the snapshot as JSON, so a cached snapshot is a copy (a caller mutating it changes
nothing) and both backends return exactly the same values.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from connectors.protocols import SnapshotCache

__all__ = ["InProcessSnapshotCache", "RedisSnapshotCache", "SnapshotCache"]


class InProcessSnapshotCache:
    """Entries expire after their TTL; beyond `max_entries` the least recently used go first."""

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def get(self, conversation_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(conversation_id)
        if entry is None:
            return None
        expires_at, payload = entry
        if self._clock() >= expires_at:
            del self._entries[conversation_id]
            return None
        self._entries.move_to_end(conversation_id)
        return json.loads(payload)

    async def put(self, conversation_id: str, snapshot: dict[str, Any], ttl_s: float) -> None:
        self._entries.pop(conversation_id, None)
        self._entries[conversation_id] = (self._clock() + ttl_s, json.dumps(snapshot))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisSnapshotCache:
    """One Redis key per conversation, expired by Redis itself (SET ... PX)."""

    def __init__(self, url: str, prefix: str = "supportflow:snapshot:") -> None:
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(url)

    async def get(self, conversation_id: str) -> dict[str, Any] | None:
        payload = await self._client.get(self.prefix + conversation_id)
        return None if payload is None else json.loads(payload)

    async def put(self, conversation_id: str, snapshot: dict[str, Any], ttl_s: float) -> None:
        await self._client.set(self.prefix + conversation_id, json.dumps(snapshot), px=max(1, round(ttl_s * 1000)))

    async def close(self) -> None:
        await self._client.aclose()
