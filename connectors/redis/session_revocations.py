"""Revoked web chat sessions: a logout ends the session on every ingress replica, not only in one browser.

A session token is a JWT, valid until it expires whatever the browser does with it; so a logout
records the session id here for as long as any of its tokens may still be valid (the session
TTL: each `welcome` renews the token), and every verification asks. In process for the embedded
stack; in Redis (the rate limits' server) when several ingress replicas must agree.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as aioredis

from connectors.protocols import SessionRevocations

__all__ = ["InProcessSessionRevocations", "RedisSessionRevocations", "SessionRevocations"]


class InProcessSessionRevocations:
    """Revocations held until they expire; beyond `max_entries` the oldest go first."""

    def __init__(self, max_entries: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    async def revoke(self, session_id: str, ttl_s: float) -> None:
        self._until.pop(session_id, None)
        self._until[session_id] = self._clock() + ttl_s
        while len(self._until) > self.max_entries:
            self._until.popitem(last=False)

    async def revoked(self, session_id: str) -> bool:
        until = self._until.get(session_id)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[session_id]
            return False
        return True

    async def close(self) -> None:
        self._until.clear()


class RedisSessionRevocations:
    """One Redis key per revoked session, expired by Redis itself when no token of it can be valid."""

    def __init__(self, url: str, prefix: str = "supportflow:revoked-session:") -> None:
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(url)

    async def revoke(self, session_id: str, ttl_s: float) -> None:
        await self._client.set(self.prefix + session_id, b"1", px=max(1, round(ttl_s * 1000)))

    async def revoked(self, session_id: str) -> bool:
        return bool(await self._client.exists(self.prefix + session_id))

    async def close(self) -> None:
        await self._client.aclose()
