"""redact_pii on real presidio: the analytics event keeps its shape and loses its PII."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from connectors.pii import PresidioRedactor
from operators._events import turn_event
from operators.nlu.entities import EntityExtractor
from operators.redact_pii import RedactPii, RedactPiiConfig, found_values, placeholder_for_entity_type
from schemas import ConversationEvent, EventAction, EventMetadata, EventResponse, RawConversationEvent
from tests.support.operators import T0, context, nlu_turn

PII = ["Jane Doe", "jane.doe@example.com", "+1 415 555 0134", "4111 1111 1111 1111", "Tom Baker"]


@pytest.fixture(scope="module")
def redactor() -> PresidioRedactor:
    shared = PresidioRedactor()
    shared.warm_up()
    return shared


def raw_event(
    text: str, message_id: str = "m-1", reply: str = "Thanks Jane Doe, we will write to you."
) -> RawConversationEvent:
    turn = nlu_turn(text=text)
    turn.message.message_id = message_id
    turn.nlu.entities = EntityExtractor(use_spacy=False).extract(text)
    return turn_event(
        turn,
        "turn_processed",
        T0,
        action=EventAction(
            type="tool",
            name="lookup_order",
            status="ok",
            result={"owner": "Tom Baker", "contacts": ["jane.doe@example.com", 42], "order": "1234567"},
        ),
        response=EventResponse(content=reply, confidence=0.9),
    )


TEXT = (
    "I'm Jane Doe, order 1234567 never came. Mail jane.doe@example.com or call +1 415 555 0134, "
    "card 4111 1111 1111 1111"
)


async def test_every_text_field_is_redacted_and_the_rest_of_the_event_is_kept(redactor):
    operator = RedactPii(redactor=redactor)
    raw = raw_event(TEXT)
    assert {e.type for e in raw.nlu.entities} >= {"email", "phone_number", "order_number"}
    try:
        out = await operator.run(raw, context())
    finally:
        await operator.close()
    assert type(out) is ConversationEvent, "the analytics topic carries ConversationEvent, not the raw record"
    serialized = out.model_dump_json()
    for value in PII:
        assert value not in serialized, f"{value!r} leaked: {serialized}"
    assert "1234567" in out.message.content and "order" in out.message.content
    # spaCy misses the name in the reply on its own; it is caught because the message named it
    assert redactor.redact(raw.response.content) == raw.response.content
    assert out.response.content == "Thanks <PERSON>, we will write to you."
    values = {e.type: e.value for e in out.nlu.entities}
    assert values["email"] == "<EMAIL_ADDRESS>" and values["phone_number"] == "<PHONE_NUMBER>"
    assert values["order_number"] == "1234567", "non-PII entities stay useful for analytics"
    assert out.action.result == {"owner": "<PERSON>", "contacts": ["<EMAIL_ADDRESS>", 42], "order": "1234567"}
    unchanged = {"event_id", "event_type", "timestamp", "conversation_id", "session_id", "customer_id", "metadata"}
    assert out.model_dump(include=unchanged) == raw.model_dump(include=unchanged)
    assert out.nlu.intent == raw.nlu.intent and out.message.id == raw.message.id


async def test_concurrent_records_share_spacy_batches(redactor):
    calls: list[int] = []

    class Counting:
        def warm_up(self) -> None:
            redactor.warm_up()

        def redact_many(self, texts: Sequence[str]) -> list[str]:
            calls.append(len(texts))
            return redactor.redact_many(texts)

    operator = RedactPii(RedactPiiConfig(max_batch=64, max_wait_ms=20), redactor=Counting())
    texts = [f"customer {i}: reach me at user{i}@example.com please" for i in range(30)]
    try:
        outs = await asyncio.gather(
            *(operator.run(raw_event(t, f"m-{i}", "ok"), context()) for i, t in enumerate(texts))
        )
    finally:
        await operator.close()
    assert [o.message.content for o in outs] == [f"customer {i}: reach me at <EMAIL_ADDRESS> please" for i in range(30)]
    assert max(calls) > 1 and len(calls) < 30, f"batch sizes {calls}: the records were not batched together"


async def test_a_repeated_reply_is_analysed_once_but_the_customers_words_every_time(redactor):
    """Template replies and tool results repeat all day; the analytics stage fell behind analysing them again."""
    seen: list[str] = []

    class Recording:
        def warm_up(self) -> None:
            redactor.warm_up()

        def redact_many(self, texts: Sequence[str]) -> list[str]:
            seen.extend(texts)
            return redactor.redact_many(texts)

    operator = RedactPii(RedactPiiConfig(max_wait_ms=0), redactor=Recording())
    fresh = RedactPii(RedactPiiConfig(max_wait_ms=0, system_text_cache=0), redactor=redactor)
    try:
        first = await operator.run(raw_event(TEXT, "m-1"), context())
        again = await operator.run(raw_event(TEXT, "m-2"), context())
        uncached = await fresh.run(raw_event(TEXT, "m-2"), context())
    finally:
        await operator.close()
        await fresh.close()
    reply = "Thanks Jane Doe, we will write to you."
    assert seen.count(reply) == 1 and seen.count("Tom Baker") == 1  # the reply and a tool result: once
    assert seen.count(TEXT) == 2  # the customer's message: each time
    assert again.model_dump(exclude={"event_id", "message"}) == uncached.model_dump(exclude={"event_id", "message"})
    assert again.response is not None and again.response.content == first.response.content  # type: ignore[union-attr]
    assert "Jane Doe" not in again.response.content and "Tom Baker" not in str(again.action)  # type: ignore[union-attr]


def test_the_reply_cache_is_bounded():
    with pytest.raises(ValueError):
        RedactPiiConfig(system_text_cache=-1)


async def test_an_event_without_text_passes_through(redactor):
    operator = RedactPii(redactor=redactor)
    closed = RawConversationEvent(
        event_id="e-closed-c1-s1",
        event_type="session_closed",
        conversation_id="conv-c1",
        session_id="c1-s1",
        customer_id="c1",
        channel="webchat",
        metadata=EventMetadata(latency_ms=0.0, model_used=""),
    )
    try:
        out = await operator.run(closed, context())
    finally:
        await operator.close()
    assert type(out) is ConversationEvent and out.model_dump() == closed.model_dump()


async def test_a_redactor_failure_raises_so_the_record_is_dead_lettered_not_leaked():
    class Broken:
        def warm_up(self) -> None: ...

        def redact_many(self, texts: Sequence[str]) -> list[str]:
            raise RuntimeError("spaCy is gone")

    operator = RedactPii(redactor=Broken())
    try:
        with pytest.raises(RuntimeError, match="spaCy is gone"):
            await operator.run(raw_event(TEXT), context())
    finally:
        await operator.close()


@pytest.mark.parametrize(
    ("entity_type", "placeholder"),
    [
        ("email", "<EMAIL_ADDRESS>"),
        ("phone_number", "<PHONE_NUMBER>"),
        ("person_name", "<PERSON>"),
        ("credit_card", "<CREDIT_CARD>"),
        ("delivery_address", "<ADDRESS>"),
        ("order_number", None),
        ("invoice_number", None),
        ("amount", None),
    ],
)
def test_pii_entity_types_are_recognised_by_name(entity_type, placeholder):
    assert placeholder_for_entity_type(entity_type) == placeholder


def test_found_values_are_read_back_from_the_redacted_text():
    original = "I'm Jane Doe, mail jane@x.org; Jane Doe again"
    redacted = "I'm <PERSON>, mail <EMAIL_ADDRESS>; <PERSON> again"
    assert found_values(original, redacted) == {"Jane Doe": "<PERSON>", "jane@x.org": "<EMAIL_ADDRESS>"}
    assert found_values("nothing here", "nothing here") == {}
    assert found_values("Al said hi", "<PERSON> said hi") == {}, "too short to replace elsewhere"


def test_config_is_validated():
    assert RedactPiiConfig.model_validate({"max_batch": 8, "max_wait_ms": 2}).max_batch == 8
    with pytest.raises(ValueError):
        RedactPiiConfig.model_validate({"max_batch": 0})
    with pytest.raises(ValueError):
        RedactPiiConfig.model_validate({"batch": 8})
