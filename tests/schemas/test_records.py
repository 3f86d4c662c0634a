"""Records are the contract: strict, versioned, and round-trip through JSON unchanged."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import Entity, Feedback, Message, RawInbound, record_types


def test_every_record_carries_a_schema_version():
    for name, record_type in record_types().items():
        assert "schema_version" in record_type.model_fields, name
        assert record_type.SCHEMA_VERSION >= 1


def test_unknown_fields_are_refused_so_typos_surface():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RawInbound.model_validate({"message_id": "m", "channel": "sms", "sender": "+1", "text": "hi", "txt": "x"})


def test_unknown_channel_is_refused_with_the_allowed_ones_named():
    with pytest.raises(ValidationError, match="Input should be 'webchat', 'mobile', 'email'"):
        RawInbound.model_validate({"message_id": "m", "channel": "pigeon", "sender": "a", "text": "hi"})


def test_entity_spans_must_be_ordered():
    with pytest.raises(ValidationError, match="precedes start"):
        Entity(type="order_number", value="1", start=5, end=2, confidence=0.5)


def test_entities_written_before_normalized_and_currency_existed_still_load():
    old = Entity.model_validate_json('{"type": "amount", "value": "$5", "start": 0, "end": 2, "confidence": 0.8}')
    assert (old.normalized, old.currency) == (None, None)
    new = old.model_copy(update={"normalized": "5", "currency": "USD"})
    assert Entity.model_validate_json(new.model_dump_json()) == new


def test_records_round_trip_through_json():
    raw = RawInbound(message_id="m", channel="email", sender="a@b.c", text="héllo", payload={"subject": "Re: x"})
    assert RawInbound.model_validate_json(raw.to_bytes()) == raw


def test_keys_follow_identity_once_it_is_known():
    raw = RawInbound(message_id="m", channel="sms", sender="+1555", text="hi")
    assert raw.partition_key() == "sms:+1555"
    message = Message(
        message_id="m", conversation_id="conv-c", customer_id="c", channel="sms", sender="+1555", text="hi",
        received_at=raw.received_at,
    )  # fmt: skip
    assert message.partition_key() == "c"


def test_feedback_ids_derive_from_the_source_action_so_a_replay_is_one_row():
    assert Feedback.derive_id("cmd-1") == Feedback.derive_id("cmd-1")
    assert Feedback.derive_id("cmd-1") != Feedback.derive_id("cmd-2")
    assert Feedback.derive_id("cmd-1", "intent_correction") != Feedback.derive_id("cmd-1", "resolution")
    source = Feedback.csat_source_id("conv-a", "req-1")
    fb = Feedback(
        feedback_id=Feedback.derive_id(source), conversation_id="conv-a", kind="csat", rating=5, author="customer"
    )
    assert Feedback.model_validate_json(fb.to_bytes()) == fb
    assert fb.partition_key() == "conv-a"


def test_feedback_rating_is_one_to_five():
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        Feedback(feedback_id="f", conversation_id="c", kind="csat", rating=6, author="customer")
