"""The snapshot cache behaves the same in process and in a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from connectors.redis.snapshot_cache import InProcessSnapshotCache, RedisSnapshotCache, SnapshotCache

SNAPSHOT = {
    "conversation": {"conversation_id": "conv-1", "message_count": 2, "started_at": "2026-03-01T09:00:00+00:00"},
    "messages": [{"message_id": "m1", "role": "customer", "text": "hi \u00e9 \U0001f642"}],
}


@pytest.fixture(params=["in_process", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[SnapshotCache]:
    if request.param == "in_process":
        made: SnapshotCache = InProcessSnapshotCache()
    else:
        made = RedisSnapshotCache(request.getfixturevalue("redis_url"), prefix=f"test-{uuid.uuid4().hex}:")
    try:
        yield made
    finally:
        await made.close()


async def test_get_returns_what_was_put(cache):
    assert await cache.get("conv-1") is None
    await cache.put("conv-1", SNAPSHOT, ttl_s=30)
    assert await cache.get("conv-1") == SNAPSHOT


async def test_a_snapshot_expires_after_its_ttl(cache):
    await cache.put("conv-1", SNAPSHOT, ttl_s=0.2)
    assert await cache.get("conv-1") == SNAPSHOT
    await asyncio.sleep(0.35)
    assert await cache.get("conv-1") is None


async def test_snapshots_are_kept_apart_by_conversation(cache):
    other = {**SNAPSHOT, "conversation": {"conversation_id": "conv-2"}}
    await cache.put("conv-1", SNAPSHOT, ttl_s=30)
    await cache.put("conv-2", other, ttl_s=30)
    assert await cache.get("conv-1") == SNAPSHOT
    assert await cache.get("conv-2") == other
    await cache.put("conv-1", other, ttl_s=30)
    assert await cache.get("conv-1") == other, "a newer snapshot replaces the older"


async def test_a_caller_changing_a_snapshot_does_not_change_the_cache(cache):
    await cache.put("conv-1", SNAPSHOT, ttl_s=30)
    got = await cache.get("conv-1")
    assert got is not None
    got["messages"].clear()
    assert await cache.get("conv-1") == SNAPSHOT


async def test_the_in_process_cache_drops_the_least_recently_used_beyond_its_size():
    cache = InProcessSnapshotCache(max_entries=2)
    await cache.put("a", {"n": 1}, ttl_s=30)
    await cache.put("b", {"n": 2}, ttl_s=30)
    assert await cache.get("a") == {"n": 1}
    await cache.put("c", {"n": 3}, ttl_s=30)
    assert await cache.get("b") is None
    assert (await cache.get("a"), await cache.get("c")) == ({"n": 1}, {"n": 3})
