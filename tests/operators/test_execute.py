"""execute: identity checks against the real commerce backend, and what the customer hears when they lock.

The agent's chain runs from enrich_context to the reply (or the hand-over), NLU given, with the
backend's tools on PostgreSQL. Alice (C000001) placed 1000001 and has ZIP 94107.
"""

from __future__ import annotations

from schemas import Escalation, OutboundMessage
from tests.support.agent_chain import ALICE, Agent
from tests.support.operators import FixedClock

PAUSED = "paused account actions"


async def test_wrong_zips_over_separate_sessions_lock_account_actions_and_the_customer_is_told_how_to_get_help(
    commerce_pool,
):
    agent = Agent(commerce_pool, FixedClock(), per_customer=5)
    for session in range(5):
        agent.new_session()
        asked = await agent.say("I want to cancel order 1000001", "cancel_order")
        assert isinstance(asked, OutboundMessage) and "ZIP code" in asked.text, f"session {session + 1}"
        answered = await agent.say(f"it's 9400{session}")
        assert isinstance(answered, OutboundMessage)
        if session < 4:
            assert "couldn't verify" in answered.text, f"session {session + 1}: only a miss so far"

    assert PAUSED in answered.text and "ask for a person" in answered.text and "customer service" in answered.text
    assert agent.ctx.table("sessions").get(ALICE).identity_locked_until is not None
    recorded = await commerce_pool.fetch("SELECT DISTINCT source FROM commerce.identity_failures")
    assert [r["source"] for r in recorded] == ["webchat:web-alice"], "execute names the message's address"

    agent.new_session()  # the next session, even on another address, knows: no ZIP is asked for
    handed = await agent.say("please cancel order 1000001", "cancel_order", sender="web-alice-phone")
    assert isinstance(handed, Escalation)
    assert handed.reason == "identity_locked" and "locked" in handed.detail and handed.priority == "high"


async def test_a_locked_customer_giving_the_right_zip_on_a_worker_that_never_saw_the_lock_is_still_refused(
    commerce_pool,
):
    clock = FixedClock()
    first = Agent(commerce_pool, clock, per_customer=2)
    for session in range(2):
        first.new_session()
        await first.say("cancel order 1000001", "cancel_order")
        await first.say(f"94{session}00")

    fresh = Agent(commerce_pool, clock, per_customer=2)  # another worker: no session, no cached lock
    asked = await fresh.say("cancel order 1000001", "cancel_order")
    assert "ZIP code" in asked.text
    answer = await fresh.say("94107")
    assert isinstance(answer, OutboundMessage) and PAUSED in answer.text
    assert not fresh.ctx.table("sessions").get(ALICE).verified
    status = await commerce_pool.fetchval("SELECT status FROM commerce.orders WHERE order_number = '1000001'")
    assert status == "pending", "nothing was cancelled"


async def test_general_questions_are_still_answered_while_account_actions_are_locked(commerce_pool):
    agent = Agent(commerce_pool, FixedClock(), per_customer=1)
    await agent.say("cancel order 1000001", "cancel_order")
    locked = await agent.say("02134")
    assert PAUSED in locked.text
    answer = await agent.say("what is your refund policy?", "check_refund_policy")
    assert isinstance(answer, OutboundMessage)
    agent.clock.advance(hours=25)  # the window has passed: the account action goes ahead again
    asked = await agent.say("cancel order 1000001", "cancel_order")
    assert isinstance(asked, OutboundMessage) and "ZIP code" in asked.text
    verified = await agent.say("94107")
    assert "Shall I cancel it?" in verified.text
