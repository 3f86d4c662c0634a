"""normalize: validation, identity resolution and provider-retry deduplication."""

from __future__ import annotations

import pytest

from operators.normalize import Normalize, NormalizeConfig, customer_id_for_address
from operators.protocols import DictTable, OperatorContext
from schemas import ContactAddress, CustomerProfile
from tests.support.operators import context, raw


async def test_unidentified_sender_gets_a_stable_customer_id_from_the_address():
    ctx = context()
    first = await Normalize().run(raw(), ctx)
    again = await Normalize().run(raw(message_id="m-2"), ctx)
    assert first is not None and again is not None
    assert first.customer_id == again.customer_id == customer_id_for_address("webchat:web-1")
    assert first.conversation_id == f"conv-{first.customer_id}"


async def test_authenticated_customer_id_wins_and_is_remembered_for_the_address():
    ctx = context()
    await Normalize().run(raw(customer_id="alice"), ctx)
    later = await Normalize().run(raw(message_id="m-2"), ctx)
    assert later is not None and later.customer_id == "alice"


async def test_whitespace_is_collapsed_and_empty_text_is_marked():
    ctx = context()
    out = await Normalize().run(raw("  hello \n\n  there  "), ctx)
    assert out is not None and out.text == "hello there" and out.content_type == "text"
    empty = await Normalize().run(raw("   ", message_id="m-9"), ctx)
    assert empty is not None and empty.content_type == "empty"


async def test_oversized_text_is_refused_with_the_limit_in_the_reason():
    with pytest.raises(ValueError, match="text is 11 characters; the limit is 10"):
        await Normalize(NormalizeConfig(max_text_chars=10)).run(raw("x" * 11), context())


@pytest.mark.parametrize(
    ("field", "value"),
    [("text", "a\x00b"), ("sender", "web-\x00"), ("customer_id", "c\x1b[2J"), ("payload.call_sid", "CA\x00")],
)
async def test_a_record_carrying_nul_or_another_control_character_is_refused_with_the_field_in_the_reason(field, value):
    """A raw record an outside client wrote to sf.ingress never met the ingress's parser: U+0000 is stopped here,
    before the conversation store's sink would fail on it."""
    record = raw(payload={"call_sid": value}) if field.startswith("payload.") else raw(**{field: value})
    with pytest.raises(ValueError, match=rf"{field} holds U\+00"):
        await Normalize().run(record, context())


async def test_provider_retry_with_a_new_message_id_is_dropped():
    ctx = context()
    assert await Normalize().run(raw(provider_message_id="SM123"), ctx) is not None
    assert await Normalize().run(raw(message_id="m-retry", provider_message_id="SM123"), ctx) is None


async def test_replay_of_the_same_record_passes_so_a_crash_loses_nothing():
    ctx = context()
    assert await Normalize().run(raw(provider_message_id="SM123"), ctx) is not None
    assert await Normalize().run(raw(provider_message_id="SM123"), ctx) is not None


async def test_an_unverified_address_neither_inherits_nor_binds_a_customer():
    """A REST body claiming someone's number is not that customer, and does not make the number its own."""
    ctx = context()
    owner = await Normalize().run(raw(channel="sms", sender="+15550001111", customer_id="alice"), ctx)
    claim = raw(message_id="m-2", channel="sms", sender="+15550001111", address_verified=False)
    claimed = await Normalize().run(claim, ctx)
    assert owner is not None and claimed is not None
    assert claimed.customer_id != "alice" and claimed.address_verified is False
    relayed = raw(message_id="m-3", channel="sms", sender="+15550002222", customer_id="bob", address_verified=False)
    await Normalize().run(relayed, ctx)
    later = await Normalize().run(raw(message_id="m-4", channel="sms", sender="+15550002222"), ctx)
    assert later is not None and later.customer_id != "bob", "the claimed number was not bound to bob"


async def test_an_unverified_address_is_not_matched_to_the_profile_listing_it():
    alice = CustomerProfile(customer_id="alice", contacts=[ContactAddress(channel="sms", address="+15550001111")])
    ctx = context()
    profiles: DictTable = DictTable()
    profiles.set("sms:+15550001111", alice)
    ctx = OperatorContext(tables={**ctx.tables, "profiles": profiles}, clock=ctx.clock, clients=ctx.clients)
    verified = await Normalize().run(raw(channel="sms", sender="+15550001111"), ctx)
    claimed = await Normalize().run(
        raw(message_id="m-2", channel="sms", sender="+15550001111", address_verified=False), ctx
    )
    assert verified is not None and verified.customer_id == "alice"
    assert claimed is not None and claimed.customer_id != "alice"
