"""A conversation with a human: the AI stays quiet, follow-ups reach the human, a handback returns it to the AI."""

from __future__ import annotations

from datetime import timedelta

from operators.enrich_context import EnrichContext, EnrichContextConfig
from operators.escalate import Escalate, escalation_id_for
from operators.keyword_nlu import Nlu
from operators.route import Route
from schemas import CustomerProfile, Message, NluTurn, RoutedTurn
from tests.support.operators import T0, FixedClock, context, message, nlu_turn, session


def handback(message_id: str = "h-1") -> Message:
    return Message(
        message_id=message_id, conversation_id="conv-c1", customer_id="c1", channel="webchat", sender="web-1",
        text="", received_at=T0, control="handback",
    )  # fmt: skip


def with_human(**fields: object) -> dict[str, object]:
    """Session fields of a conversation a human took at T0 with an `urgent` first escalation."""
    return {
        "escalated": True, "escalated_at": T0, "escalation_id": "x-first", "escalation_priority": "urgent", **fields
    }  # fmt: skip


async def routed(turn: NluTurn) -> RoutedTurn:
    out = await Route().run(turn, context())
    assert out is not None
    return out


async def test_while_a_human_has_it_every_message_goes_to_them_even_a_confident_one():
    decision = (await routed(nlu_turn(confidence=0.99, **with_human()))).route
    assert (decision.branch, decision.reason, decision.underlying_reason) == ("human", "with_human", None)
    assert "follow-up of x-first" in decision.detail


async def test_a_follow_up_that_would_escalate_on_its_own_says_which_rule_fired():
    decision = (await routed(nlu_turn(text="I will call my lawyer", **with_human()))).route
    assert (decision.reason, decision.underlying_reason) == ("with_human", "keyword_trigger")


async def test_escalate_remembers_the_open_hand_over_in_the_session():
    ctx = context()
    turn = await routed(nlu_turn(intent="contact_human_agent", text="a person please"))
    escalation, event = (await Escalate().run(turn, ctx)).records
    stored = ctx.table("sessions").get("c1")
    assert escalation.escalation_id == escalation_id_for("m-1")
    assert (stored.escalated, stored.escalated_at, stored.escalation_id) == (True, T0, escalation.escalation_id)
    assert stored.escalation_priority == escalation.priority == "normal"
    assert stored.history[-1].text == "[handed to a human: customer_requested_human]"
    assert event.action.status == "queued"


async def test_a_follow_up_keeps_its_own_id_and_the_open_priority_and_is_not_announced_again():
    ctx = context()
    turn = await routed(nlu_turn(confidence=0.99, text="any news?", **with_human()))
    escalation, event = (await Escalate().run(turn, ctx)).records
    stored = ctx.table("sessions").get("c1")
    assert escalation.escalation_id == escalation_id_for("m-1"), "derived from the message id, like any escalation"
    assert (escalation.reason, escalation.priority) == ("with_human", "urgent"), "never lower than the open one"
    assert "follow-up of x-first" in escalation.detail
    assert (event.event_type, event.action.name, event.action.status) == ("escalated", "with_human", "follow_up")
    assert (stored.escalated, stored.escalated_at, stored.escalation_id) == (True, T0, "x-first")
    assert not any(h.text.startswith("[handed to a human") for h in stored.history)


async def test_a_follow_up_raises_the_priority_when_its_own_rule_is_more_urgent():
    ctx = context()
    turn = await routed(nlu_turn(text="I will call my lawyer", **with_human(escalation_priority="normal")))
    escalation, _ = (await Escalate().run(turn, ctx)).records
    assert escalation.priority == "high"
    assert ctx.table("sessions").get("c1").escalation_priority == "high"


async def test_a_vip_follow_up_is_bumped_like_a_first_escalation():
    turn = nlu_turn(confidence=0.99, **with_human(escalation_priority="low"))
    vip = turn.model_copy(update={"profile": CustomerProfile(customer_id="c1", vip_tier="gold")})
    escalation, _ = (await Escalate().run(await routed(vip), context())).records
    assert escalation.priority == "high", "with_human is normal, one step up for gold"


async def test_handback_clears_the_hand_over_and_ends_the_turn_without_a_reply():
    ctx = context()
    ctx.table("sessions").set("c1", session(**with_human()))
    turn = await EnrichContext().run(handback(), ctx)
    assert turn is not None and turn.session.turn_count == 1, "a control message is not a customer turn"
    nlu = await Nlu().run(turn, ctx)
    assert nlu.nlu.intent == "control" and nlu.session.sentiment_trend == []
    assert await Route().run(nlu, ctx) is None, "nothing goes to the customer or to a human"
    stored = ctx.table("sessions").get("c1")
    assert (stored.escalated, stored.escalated_at, stored.escalation_id, stored.escalation_priority) == (
        False, None, None, None,
    )  # fmt: skip
    assert stored.history[-1].role == "human" and "h-1" in stored.recent_message_ids
    after = (await routed(nlu_turn(confidence=0.99, **stored.model_dump(exclude={"customer_id"})))).route
    assert (after.branch, after.reason) == ("auto", "confident"), "the AI answers again"


async def test_a_replayed_handback_is_dropped_so_it_cannot_end_a_later_hand_over():
    ctx = context()
    ctx.table("sessions").set("c1", session(**with_human(), recent_message_ids=["h-1"]))
    assert await EnrichContext().run(handback("h-1"), ctx) is None


async def test_a_handback_without_a_session_is_dropped():
    assert await EnrichContext().run(handback(), context()) is None


async def test_a_pause_does_not_hand_the_conversation_back_but_the_hold_has_a_limit():
    clock = FixedClock(T0 + timedelta(hours=2))
    ctx = context(clock)
    ctx.table("sessions").set("c1", session(**with_human()))
    turn = await EnrichContext().run(message("still there?", message_id="m-2"), ctx)
    assert turn is not None and turn.session.session_id == "c1-s2", "a new session after the idle gap"
    assert (turn.session.escalated, turn.session.escalation_id) == (True, "x-first")

    clock.advance(hours=30)
    short = EnrichContext(EnrichContextConfig(human_hold_hours=24))
    later = await short.run(message("hello?", message_id="m-3"), ctx)
    assert later is not None and not later.session.escalated
