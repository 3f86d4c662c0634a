"""The default topology end to end on a real tansu broker and a real worker process."""

from __future__ import annotations

import json
from collections import defaultdict

from tests.support.conversations import conversation_traffic
from tests.support.stream import answered_ids, produce_messages, raw_message, read_answers, read_topics


def test_every_message_gets_exactly_one_answer_in_conversation_order(broker, workers):
    workers.start()
    messages = conversation_traffic(conversations=40, per_conversation=5)
    assert len(messages) == 200 and len({m["channel"] for m in messages}) == 3
    produce_messages(broker.bootstrap, messages)

    wanted = {m["message_id"] for m in messages}
    records = read_answers(broker.bootstrap, wanted, timeout_s=90)
    answers = answered_ids(records)
    assert set(answers) == wanted, f"unanswered: {sorted(wanted - set(answers))[:5]}"
    assert len(answers) == len(wanted), "a message was answered twice"

    # Order is a property of one topic: replies and escalations are two topics, read in no
    # common order, so the check runs on each, and on sf.events, where every turn of a
    # conversation (answered or handed over) lands in one partition in processing order.
    events = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: len(rs) >= len(wanted))
    timelines = {
        "sf.outbound": answered_ids([r for r in records if r.topic == "sf.outbound"]),
        "sf.escalations": answered_ids([r for r in records if r.topic == "sf.escalations"]),
        "sf.events": [json.loads(r.value)["message"]["id"] for r in events],
    }
    assert sorted(timelines["sf.events"]) == sorted(wanted)
    for topic, ids in timelines.items():
        by_conversation: dict[str, list[int]] = defaultdict(list)
        for message_id in ids:
            conversation, turn = message_id.rsplit("-", 1)
            by_conversation[conversation].append(int(turn))
        for conversation, turns in by_conversation.items():
            assert turns == sorted(turns), f"{conversation} out of order on {topic}: {turns}"

    replies = [json.loads(r.value) for r in records if r.topic == "sf.outbound"]
    escalations = [json.loads(r.value) for r in records if r.topic == "sf.escalations"]
    assert replies and escalations, "the scripted traffic has both answerable and human-only messages"
    assert {e["reason"] for e in escalations} >= {"customer_requested_human", "out_of_scope"}
    sms = [r for r in replies if r["channel"] == "sms"]
    assert sms and all(len(part) <= 153 for r in sms for part in r["parts"])


def test_every_turn_emits_one_event_with_the_design_schema(broker, workers):
    workers.start()
    messages = conversation_traffic(conversations=4, per_conversation=3, prefix="ev")
    produce_messages(broker.bootstrap, messages)
    wanted = {m["message_id"] for m in messages}

    def events_seen(rs):
        return {json.loads(r.value)["message"]["id"] for r in rs if json.loads(r.value).get("message")}

    records = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: wanted <= events_seen(rs))
    events = [json.loads(r.value) for r in records]
    assert sorted(e["message"]["id"] for e in events) == sorted(wanted)
    for event in events:
        assert event["event_type"] in {"turn_processed", "escalated"}
        assert set(event) >= {
            "event_type", "timestamp", "conversation_id", "session_id", "customer_id", "channel",
            "message", "nlu", "action", "response", "metadata",
        }  # fmt: skip
        assert set(event["nlu"]) >= {"intent", "confidence", "entities", "sentiment"}
        assert set(event["metadata"]) >= {"latency_ms", "model_used", "cost_usd"}
        assert event["metadata"]["latency_ms"] >= 0
    sessions = {e["customer_id"]: e["session_id"] for e in events}
    assert len(sessions) == 4, "one session per customer"


def test_one_customer_keeps_one_session_across_channels(broker, workers):
    workers.start()
    turns = [
        raw_message("omni-1", "webchat", "web-alice", "where is my order 1234567?", customer_id="alice"),
        # as the Twilio webhook publishes them: the signed request vouches for the phone number
        raw_message("omni-2", "sms", "+15550001111", "when will order 1234567 arrive?", "alice", address_verified=True),
        raw_message(
            "omni-3", "sms", "+15550001111", "how do I get a refund?", address_verified=True
        ),  # no id: the phone is known now
    ]
    for turn in turns:  # one after another: across channels there is no order to keep otherwise
        produce_messages(broker.bootstrap, [turn])
        read_answers(broker.bootstrap, {turn["message_id"]})

    events = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: len(rs) >= 3)
    by_message = {json.loads(r.value)["message"]["id"]: json.loads(r.value) for r in events}
    assert {e["customer_id"] for e in by_message.values()} == {"alice"}
    assert {e["session_id"] for e in by_message.values()} == {"alice-s1"}
    assert [by_message[f"omni-{i}"]["channel"] for i in (1, 2, 3)] == ["webchat", "sms", "sms"]

    changelog = read_topics(broker.bootstrap, ["supportflow-sessions-changelog"], until=lambda rs: False, timeout_s=3)
    writes = [r for r in changelog if r.key == b"alice"]
    session = json.loads(writes[-1].value)
    assert session["turn_count"] == 3 and session["channels"] == ["webchat", "sms"]

    # the state lives in the partition of the customer's messages, so whichever worker owns
    # those messages also recovers the customer's session
    messages = read_topics(broker.bootstrap, ["sf.messages"], until=lambda rs: len(rs) >= 3)
    assert {r.partition for r in messages} == {r.partition for r in writes}
