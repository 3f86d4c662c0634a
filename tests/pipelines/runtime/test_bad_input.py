"""Bad records on sf.ingress go to sf.dlq with their reason; the worker keeps answering."""

from __future__ import annotations

import base64
import json

from tests.support.stream import answered_ids, produce, produce_messages, raw_message, read_answers, read_topics


def _with_payload(message_id: str, value: bytes) -> bytes:
    return (
        b'{"message_id": "'
        + message_id.encode()
        + b'", "channel": "sms", "sender": "+1", "text": "hi", '
        + (b'"payload": {"n": ' + value + b"}}")
    )


def test_bad_records_are_dead_lettered_with_reasons_and_good_ones_still_answered(broker, workers):
    process = workers.start()
    good_before = raw_message("good-1", "webchat", "w1", "where is my order 1234567?")
    good_after = raw_message("good-2", "sms", "+15550000001", "how do I get a refund?")
    bad = [
        ("malformed", b'{"message_id": "x1", "channel": '),
        ("wrong-types", json.dumps({"message_id": 5, "channel": "sms", "sender": ["a"], "text": 7}).encode()),
        ("unknown-channel", json.dumps(raw_message("x3", "pigeon", "coop-1", "coo")).encode()),
        ("oversized", json.dumps(raw_message("x4", "email", "big@example.com", "refund " * 1000)).encode()),
        ("invalid-utf8", b'{"message_id": "x5", "channel": "sms", "sender": "+1", "text": "\xff\xfe broken"}'),
        ("unknown-field", json.dumps({**raw_message("x6", "sms", "+1", "hi"), "colour": "red"}).encode()),
        # what an outside Kafka client can write that no ingress would let through
        ("number-of-5000-digits", _with_payload("x7", b"1" * 5000)),
        ("lone-surrogate", b'{"message_id": "x8", "channel": "sms", "sender": "+1", "text": "x\\ud800y"}'),
        ("nested-5000-deep", _with_payload("x9", b"[" * 5000 + b"]" * 5000)),
        ("nul", json.dumps(raw_message("x10", "sms", "+15550000002", "a\u0000b")).encode()),
        # parsers disagree on these (the last key wins in one, the first in another): refused, as at the ingress
        ("key-given-twice", b'{"message_id": "x11", "channel": "sms", "sender": "+1", "text": "hi", "text": "yo"}'),
        ("nan", _with_payload("x12", b"NaN")),
        ("overflowing-float", _with_payload("x13", b"1e999")),
    ]
    produce_messages(broker.bootstrap, [good_before])
    produce(broker.bootstrap, "sf.ingress", [(name, value) for name, value in bad])
    produce_messages(broker.bootstrap, [good_after])

    letters = read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: len(rs) >= len(bad))
    by_key = {r.key.decode(): json.loads(r.value) for r in letters}
    assert set(by_key) == {name for name, _ in bad}
    assert "malformed JSON" in by_key["malformed"]["error"]
    assert "message_id: Input should be a valid string" in by_key["wrong-types"]["error"]
    assert "channel: Input should be 'webchat'" in by_key["unknown-channel"]["error"]
    assert by_key["oversized"]["operator"] == "normalize"
    assert "the limit is 4000" in by_key["oversized"]["error"]
    assert "UTF-8" in by_key["invalid-utf8"]["error"] or "unicode" in by_key["invalid-utf8"]["error"].lower()
    assert "colour: Extra inputs are not permitted" in by_key["unknown-field"]["error"]
    for name in (
        "number-of-5000-digits",
        "lone-surrogate",
        "nested-5000-deep",
        "key-given-twice",
        "nan",
        "overflowing-float",
    ):
        assert by_key[name]["operator"] == "decode", by_key[name]
        assert "malformed JSON" in by_key[name]["error"], by_key[name]["error"]
    assert "appears twice" in by_key["key-given-twice"]["error"], by_key["key-given-twice"]["error"]
    assert by_key["nul"]["operator"] == "decode" and "U+0000" in by_key["nul"]["error"], by_key["nul"]["error"]
    for name, value in bad:
        letter = by_key[name]
        assert base64.b64decode(letter["original_b64"]) == value, "the original bytes are kept exactly"
        assert letter["source_topic"] == "sf.ingress" and letter["offset"] is not None

    answers = read_answers(broker.bootstrap, {"good-1", "good-2"})
    assert sorted(answered_ids(answers)) == ["good-1", "good-2"]
    assert process.poll() is None, "the worker is still running"
