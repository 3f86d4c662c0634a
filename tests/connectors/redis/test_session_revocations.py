"""Revoked web chat sessions, in process and in a real Redis shared by two stores (two ingress replicas)."""

from __future__ import annotations

from connectors.redis.session_revocations import InProcessSessionRevocations, RedisSessionRevocations


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_revocation_holds_until_no_token_of_the_session_can_be_valid():
    clock = Clock()
    store = InProcessSessionRevocations(clock=clock)
    await store.revoke("s1", ttl_s=60)
    assert await store.revoked("s1") and not await store.revoked("s2")
    clock.now += 61
    assert not await store.revoked("s1")


async def test_a_logout_on_one_replica_is_seen_by_another(redis_url):
    first, second = RedisSessionRevocations(redis_url), RedisSessionRevocations(redis_url)
    try:
        assert not await second.revoked("shared-session")
        await first.revoke("shared-session", ttl_s=30)
        assert await second.revoked("shared-session")
    finally:
        await first.close()
        await second.close()
