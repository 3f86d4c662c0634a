"""enrich_context: sessions open, count turns, expire when idle, and recognise replays."""

from __future__ import annotations

from operators.enrich_context import EnrichContext, EnrichContextConfig
from tests.support.operators import FixedClock, context, message


async def test_first_message_opens_session_one_with_one_turn():
    turn = await EnrichContext().run(message(), context())
    assert turn is not None
    assert turn.session.session_id == "c1-s1" and turn.session.turn_count == 1
    assert turn.session.channels == ["webchat"] and turn.session.history[-1].text == message().text


async def test_turns_accumulate_across_channels_in_one_session():
    ctx = context()
    op = EnrichContext()
    first = await op.run(message(message_id="m-1"), ctx)
    assert first is not None
    ctx.table("sessions").set("c1", first.session)
    second = await op.run(message(message_id="m-2", channel="sms"), ctx)
    assert second is not None
    assert second.session.turn_count == 2 and second.session.channels == ["webchat", "sms"]


async def test_an_idle_gap_opens_the_next_session():
    clock = FixedClock()
    ctx = context(clock)
    op = EnrichContext(EnrichContextConfig(session_idle_minutes=30))
    first = await op.run(message(message_id="m-1"), ctx)
    assert first is not None
    ctx.table("sessions").set("c1", first.session)
    clock.advance(minutes=31)
    later = await op.run(message(message_id="m-2"), ctx)
    assert later is not None
    assert later.session.session_id == "c1-s2" and later.session.turn_count == 1


async def test_a_message_already_answered_is_dropped_not_counted_again():
    ctx = context()
    op = EnrichContext()
    first = await op.run(message(message_id="m-1"), ctx)
    assert first is not None
    ctx.table("sessions").set("c1", first.session)
    assert await op.run(message(message_id="m-1"), ctx) is None
