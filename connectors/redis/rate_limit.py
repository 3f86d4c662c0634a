"""Per-channel rate limits for the ingress: token buckets, in process or shared through Redis.

One bucket per channel and sender, sized by the channel's limit (the design's: web chat and
mobile 60 a minute, SMS 10 a minute, WhatsApp 30 a minute, email 100 an hour). Two more are per
client address, for the REST API: `source` (requests of any kind, before the body is read) and
`dead_letters` (how many refused bodies one address may have kept on the dead-letter topic). Behind a load
balancer every ingress replica must see the same buckets, so production keeps them in Redis,
updated atomically by one Lua script; the embedded default keeps them in this process.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from connectors.protocols import Decision, RateLimiter

__all__ = [
    "DEFAULT_LIMITS",
    "Decision",
    "InProcessRateLimiter",
    "RateLimit",
    "RateLimiter",
    "RedisRateLimiter",
    "retry_after_header",
]


class RateLimit(BaseModel):
    """`requests` per `per_seconds`, refilled continuously; a burst may use the whole allowance."""

    model_config = ConfigDict(extra="forbid")

    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0)

    @property
    def refill_per_second(self) -> float:
        return self.requests / self.per_seconds


DEFAULT_LIMITS: dict[str, RateLimit] = {
    "webchat": RateLimit(requests=60, per_seconds=60),
    "mobile": RateLimit(requests=60, per_seconds=60),
    "sms": RateLimit(requests=10, per_seconds=60),
    "whatsapp": RateLimit(requests=30, per_seconds=60),
    "email": RateLimit(requests=100, per_seconds=3600),
    "voice": RateLimit(requests=10, per_seconds=60),
    "slack": RateLimit(requests=60, per_seconds=60),
    "teams": RateLimit(requests=60, per_seconds=60),
    "api": RateLimit(requests=600, per_seconds=60),
    # not channels: buckets per client address (admit.py), checked before a request is even read
    "source": RateLimit(requests=6000, per_seconds=60),
    "dead_letters": RateLimit(requests=30, per_seconds=60),
}


def _limit_for(limits: Mapping[str, RateLimit], channel: str) -> RateLimit:
    return limits.get(channel) or DEFAULT_LIMITS.get(channel) or DEFAULT_LIMITS["api"]


class InProcessRateLimiter:
    """Buckets in a dict: right for one ingress process (the embedded stack), wrong behind a load balancer."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        self.limits = dict(limits or DEFAULT_LIMITS)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_buckets = max_buckets

    async def allow(self, channel: str, sender: str) -> Decision:
        limit = _limit_for(self.limits, channel)
        key = f"{channel}:{sender}"
        now = self._clock()
        tokens, stamp = self._buckets.pop(key, (float(limit.requests), now))
        tokens = min(float(limit.requests), tokens + (now - stamp) * limit.refill_per_second)
        if tokens >= 1.0:
            decision = Decision(True)
            tokens -= 1.0
        else:
            decision = Decision(False, (1.0 - tokens) / limit.refill_per_second)
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_buckets:  # the least recently seen senders go first
            self._buckets.popitem(last=False)
        return decision

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1]: the bucket; ARGV: capacity, refill per second. Redis's own clock keeps replicas consistent.
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1])
local stamp = tonumber(bucket[2])
if tokens == nil then
  tokens = capacity
  stamp = now
end
tokens = math.min(capacity, tokens + (now - stamp) / 1000 * rate)
local allowed = 0
local retry_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, retry_ms}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every ingress replica; one atomic script call per request."""

    def __init__(self, url: str, limits: Mapping[str, RateLimit] | None = None, prefix: str = "sf:rate:") -> None:
        import redis.asyncio as redis

        self.limits = dict(limits or DEFAULT_LIMITS)
        self._client = redis.from_url(url)
        self._script = self._client.register_script(TOKEN_BUCKET_LUA)
        self._prefix = prefix

    async def allow(self, channel: str, sender: str) -> Decision:
        limit = _limit_for(self.limits, channel)
        allowed, retry_ms = await self._script(
            keys=[f"{self._prefix}{channel}:{sender}"], args=[limit.requests, limit.refill_per_second]
        )
        return Decision(bool(allowed), int(retry_ms) / 1000.0)

    async def close(self) -> None:
        await self._client.aclose()


def retry_after_header(decision: Decision) -> str:
    """Whole seconds, rounded up, as HTTP's Retry-After wants them."""
    return str(max(1, math.ceil(decision.retry_after_s)))
