"""crm.verify_identity's lockout (issue 15) against a real PostgreSQL with the well-known customers.

Alice (C000001) placed 1000001 and has ZIP 94107; Bob (C000002) placed 2000001 and has ZIP 10001.
Each attempt below goes through a tool built anew on its own pool, as another worker or a later
session would: the count lives only in the database.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from connectors.backends.commerce import IdentityLockout, VerifyIdentity
from connectors.protocols import ToolCall, ToolError

ALICE, BOB = "C000001", "C000002"
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


async def check(
    dsn: str, lockout: IdentityLockout, customer: str, order: str, source: str | None = None, **secret: str
) -> dict[str, Any]:
    """One identity check by a tool on a pool of its own (a fresh worker), closed afterwards."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, server_settings={"timezone": "UTC"})
    try:
        tool = VerifyIdentity(pool, lockout=lockout)
        arguments: dict[str, Any] = {"order_number": order, **secret}
        return await tool.call(ToolCall("crm.verify_identity", arguments, customer, "k", source))
    finally:
        await pool.close()


async def test_five_wrong_zips_in_separate_sessions_lock_the_customer_and_then_the_right_zip_fails_too(commerce_dsn):
    clock = Clock()
    lockout = IdentityLockout(max_per_customer=5, max_per_source=100, clock=clock)
    # a different channel address each time: the per-customer count alone must catch it
    for attempt in range(4):
        clock.at += timedelta(minutes=10)
        answer = await check(commerce_dsn, lockout, ALICE, "1000001", f"sms:+1555000{attempt}", zip=f"9400{attempt}")
        assert answer == {"verified": False}, f"attempt {attempt + 1} is not yet locked"
    clock.at += timedelta(minutes=10)
    fifth = await check(commerce_dsn, lockout, ALICE, "1000001", "email:x@example.net", zip="94009")
    assert fifth["verified"] is False and fifth["locked"] is True, "the fifth miss says so at once"
    assert datetime.fromisoformat(fifth["locked_until"]) == T0 + timedelta(minutes=10) + timedelta(hours=24)

    right = await check(commerce_dsn, lockout, ALICE, "1000001", "webchat:alice-own-tab", zip="94107")
    assert right["verified"] is False and right["locked"] is True, "the lock is checked before the details"
    other = await check(commerce_dsn, lockout, BOB, "2000001", "webchat:bob", zip="10001")
    assert other == {"verified": True}, "another customer is not affected"


async def test_guessing_across_many_customers_from_one_source_locks_that_source(commerce_dsn):
    clock = Clock()
    lockout = IdentityLockout(max_per_customer=5, max_per_source=10, clock=clock)
    attacker = "api:scraper-1"
    victims = [f"C{n:06d}" for n in range(3, 13)]  # ten customers, one guess each: no customer count is near 5
    for victim in victims:
        clock.at += timedelta(seconds=30)
        answer = await check(commerce_dsn, lockout, victim, "1000001", attacker, zip="12345")
        assert answer["verified"] is False
    assert answer.get("locked") is True, "the tenth miss from the source locks it"

    from_attacker = await check(commerce_dsn, lockout, BOB, "2000001", attacker, zip="10001")
    assert from_attacker["locked"] is True, "even a right answer is refused from a locked source"
    from_bob = await check(commerce_dsn, lockout, BOB, "2000001", "sms:+12125550100", zip="10001")
    assert from_bob == {"verified": True}, "Bob's own channel is not the locked source"


async def test_the_lock_ends_when_the_window_has_passed(commerce_dsn):
    clock = Clock()
    lockout = IdentityLockout(max_per_customer=3, max_per_source=100, window=timedelta(hours=24), clock=clock)
    for minute in range(3):
        clock.at = T0 + timedelta(minutes=minute)
        await check(commerce_dsn, lockout, ALICE, "1000001", "webchat:t", zip="00000")
    clock.at = T0 + timedelta(hours=23, minutes=59)
    still = await check(commerce_dsn, lockout, ALICE, "1000001", "webchat:t", zip="94107")
    assert still["locked"] is True and datetime.fromisoformat(still["locked_until"]) == T0 + timedelta(hours=24)
    clock.at = T0 + timedelta(hours=24, seconds=1)  # the oldest miss has left the window: two remain
    later = await check(commerce_dsn, lockout, ALICE, "1000001", "webchat:t", zip="94107")
    assert later == {"verified": True}


async def test_a_success_clears_the_customers_count_but_never_the_sources(commerce_dsn):
    clock = Clock()
    lockout = IdentityLockout(max_per_customer=3, max_per_source=4, clock=clock)
    mine = "webchat:guesser"
    for _ in range(2):
        clock.at += timedelta(minutes=1)
        await check(commerce_dsn, lockout, ALICE, "1000001", mine, zip="99999")
    clock.at += timedelta(minutes=1)
    assert await check(commerce_dsn, lockout, ALICE, "1000001", mine, zip="94107") == {"verified": True}
    clock.at += timedelta(minutes=1)
    # Alice's third miss: 3 >= 3 had the success not cleared her count
    assert await check(commerce_dsn, lockout, ALICE, "1000001", mine, zip="99998") == {"verified": False}
    clock.at += timedelta(minutes=1)
    fourth = await check(commerce_dsn, lockout, ALICE, "1000001", mine, zip="99997")
    assert fourth["locked"] is True, "the source's four misses still count: a success does not wipe them"
    clock.at += timedelta(minutes=1)
    elsewhere = await check(commerce_dsn, lockout, ALICE, "1000001", "sms:+14155550100", zip="94107")
    assert elsewhere == {"verified": True}, "Alice herself is not locked (2 misses since her success)"


async def test_concurrent_wrong_guesses_never_get_past_the_threshold(commerce_dsn, commerce_pool):
    lockout = IdentityLockout(max_per_customer=3, max_per_source=100)
    tool = VerifyIdentity(commerce_pool, lockout=lockout)
    calls = [
        tool.call(ToolCall("crm.verify_identity", {"order_number": "1000001", "zip": f"0000{n}"}, ALICE, "k"))
        for n in range(8)
    ]
    answers = await asyncio.gather(*calls)
    recorded = await commerce_pool.fetchval(
        "SELECT count(*) FROM commerce.identity_failures WHERE customer_id = $1", ALICE
    )
    assert recorded == 3, "checks of one customer are serialised: the locked ones compare and record nothing"
    assert sum(1 for a in answers if a.get("locked")) == 8 - 2


async def test_a_source_named_in_the_arguments_is_refused_not_counted(commerce_dsn):
    lockout = IdentityLockout(max_per_customer=5, max_per_source=1)
    call = ToolCall("crm.verify_identity", {"order_number": "1000001", "zip": "1", "source": "x"}, ALICE, "k")
    pool = await asyncpg.create_pool(commerce_dsn, min_size=1, max_size=1)
    try:
        with pytest.raises(ToolError) as refused:
            await VerifyIdentity(pool, lockout=lockout).call(call)
    finally:
        await pool.close()
    assert refused.value.kind == "invalid", "only the runtime says where a request came from"
