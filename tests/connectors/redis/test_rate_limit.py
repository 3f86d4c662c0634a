"""Token buckets per channel and sender, in process and in a real Redis shared by replicas."""

from __future__ import annotations

import asyncio

import pytest

from connectors.redis.rate_limit import DEFAULT_LIMITS, InProcessRateLimiter, RateLimit, RedisRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_in_process_bucket_allows_the_burst_then_refuses_with_the_wait():
    clock = Clock()
    limiter = InProcessRateLimiter({"sms": RateLimit(requests=3, per_seconds=60)}, clock=clock)
    assert [(await limiter.allow("sms", "+1")).allowed for _ in range(3)] == [True, True, True]
    refused = await limiter.allow("sms", "+1")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(20.0)
    clock.now += 20.0
    assert (await limiter.allow("sms", "+1")).allowed, "one token came back after 20 s"


async def test_buckets_are_per_sender_and_per_channel():
    limiter = InProcessRateLimiter({"sms": RateLimit(requests=1, per_seconds=60)}, clock=Clock())
    assert (await limiter.allow("sms", "+1")).allowed
    assert not (await limiter.allow("sms", "+1")).allowed
    assert (await limiter.allow("sms", "+2")).allowed
    assert (await limiter.allow("webchat", "+1")).allowed


def test_the_design_limits_are_the_defaults():
    per_minute = {c: round(limit.requests * 60 / limit.per_seconds, 2) for c, limit in DEFAULT_LIMITS.items()}
    assert per_minute["webchat"] == per_minute["mobile"] == 60
    assert (per_minute["sms"], per_minute["whatsapp"]) == (10, 30)
    assert DEFAULT_LIMITS["email"] == RateLimit(requests=100, per_seconds=3600)


async def test_redis_bucket_is_shared_by_every_replica(redis_url):
    limits = {"whatsapp": RateLimit(requests=4, per_seconds=60)}
    replicas = [RedisRateLimiter(redis_url, limits, prefix="test-shared:") for _ in range(2)]
    try:
        decisions = [await replicas[i % 2].allow("whatsapp", "+3") for i in range(5)]
        assert [d.allowed for d in decisions] == [True, True, True, True, False]
        assert 14.0 <= decisions[-1].retry_after_s <= 15.0
        assert (await replicas[0].allow("whatsapp", "+4")).allowed, "another sender has its own bucket"
    finally:
        for replica in replicas:
            await replica.close()


async def test_redis_bucket_refills_and_concurrent_requests_never_overspend(redis_url):
    limiter = RedisRateLimiter(redis_url, {"api": RateLimit(requests=20, per_seconds=2)}, prefix="test-refill:")
    try:
        decisions = await asyncio.gather(*(limiter.allow("api", "k") for _ in range(50)))
        assert sum(d.allowed for d in decisions) == 20, "the script is atomic: 20 tokens, 20 admitted"
        await asyncio.sleep(0.25)  # 10 tokens a second: two or three are back
        assert (await limiter.allow("api", "k")).allowed
    finally:
        await limiter.close()
