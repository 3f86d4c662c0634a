"""PII redaction end to end: real tansu, real worker, real presidio.

Customer messages full of PII go in on `sf.ingress`; the analytics copy on `sf.events` must hold
none of it, while the conversation topics (`sf.messages`, read by the conversation store) keep
the customer's words exactly.
"""

from __future__ import annotations

import json

from tests.support.stream import produce_messages, raw_message, read_topics

# (message, PII it carries)
MESSAGES: list[tuple[dict, list[str]]] = [
    (
        raw_message(
            "pii-1", "webchat", "w-1", "Hi, I'm John Smith, where is my order 1234567? Email john.smith@example.com"
        ),
        ["John Smith", "john.smith@example.com"],
    ),
    (
        raw_message("pii-2", "sms", "+14155550134", "please call me on +1 415 555 0134 about my refund"),
        ["415 555 0134"],
    ),
    (
        raw_message("pii-3", "email", "maria.garcia@example.org", "This is Maria Garcia, my number is (415) 555-0199"),
        ["Maria Garcia", "(415) 555-0199", "maria.garcia@example.org"],
    ),
    (
        raw_message("pii-4", "webchat", "w-4", "charge my card 4111 1111 1111 1111 instead, thanks Priya Patel"),
        ["4111 1111 1111 1111", "Priya Patel"],
    ),
    (
        raw_message("pii-5", "whatsapp", "+442079460958", "UK number +44 20 7946 0958, I want to cancel my order"),
        ["+44 20 7946 0958", "7946 0958"],
    ),
    (
        raw_message("pii-6", "webchat", "w-6", "card 5500-0000-0000-0004 was declined, I need a human agent"),
        ["5500-0000-0000-0004"],
    ),
]


def test_events_carry_no_pii_while_the_conversation_topics_keep_the_raw_text(broker, workers):
    workers.start()
    produce_messages(broker.bootstrap, [message for message, _ in MESSAGES])
    wanted = {message["message_id"] for message, _ in MESSAGES}

    def turns(records):
        return {(json.loads(r.value).get("message") or {}).get("id") for r in records}

    events = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: wanted <= turns(rs), timeout_s=120)
    assert wanted <= turns(events), f"no event for {sorted(wanted - turns(events))}"
    everything = b"\n".join(r.value or b"" for r in events).decode()
    for _, pii in MESSAGES:
        for value in pii:
            assert value not in everything, f"{value!r} reached sf.events"
    by_id = {json.loads(r.value)["message"]["id"]: json.loads(r.value) for r in events if b'"message":{' in r.value}
    assert "<PERSON>" in by_id["pii-1"]["message"]["content"]
    assert "<EMAIL_ADDRESS>" in by_id["pii-1"]["message"]["content"]
    assert "1234567" in by_id["pii-1"]["message"]["content"], "the order number is not PII and stays"
    assert "<CREDIT_CARD>" in by_id["pii-4"]["message"]["content"]
    assert "<PHONE_NUMBER>" in by_id["pii-5"]["message"]["content"]

    # the raw copies: every word intact where the conversation store reads them
    messages = read_topics(broker.bootstrap, ["sf.messages"], until=lambda rs: len(rs) >= len(MESSAGES))
    texts = {json.loads(r.value)["message_id"]: json.loads(r.value)["text"] for r in messages}
    assert texts == {message["message_id"]: message["text"] for message, _ in MESSAGES}

    # and the raw event topic is what the analytics stage redacted: same turns, raw text
    raw = read_topics(broker.bootstrap, ["sf.events.raw"], until=lambda rs: wanted <= turns(rs))
    raw_texts = {json.loads(r.value)["message"]["id"]: json.loads(r.value)["message"]["content"] for r in raw}
    assert raw_texts == texts
