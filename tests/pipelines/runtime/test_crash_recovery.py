"""SIGKILL a worker mid-stream: a new one loses nothing, answers nothing twice, keeps turn counts."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict

from connectors.channels.conversation_view import ConversationView
from schemas import Escalation, OutboundMessage
from tests.support.conversations import conversation_traffic
from tests.support.stream import answered_ids, produce_messages, read_answers, read_topics, where_lost


def test_killed_worker_is_replaced_without_loss_or_double_replies(broker, workers):
    first = workers.start()
    messages = conversation_traffic(conversations=40, per_conversation=5, prefix="k")
    producer = threading.Thread(target=produce_messages, args=(broker.bootstrap, messages, 0.03))
    producer.start()

    # kill once the stream is well under way: some answers out, many messages still to come
    so_far = read_topics(broker.bootstrap, ["sf.outbound", "sf.escalations"], until=lambda rs: len(rs) >= 40)
    workers.kill(first)
    assert 40 <= len(set(answered_ids(so_far))) < len(messages), "the kill landed mid-stream"
    killed_at = time.monotonic()
    workers.start()
    producer.join()
    assert time.monotonic() - killed_at < 90

    wanted = {m["message_id"] for m in messages}
    records = read_answers(broker.bootstrap, wanted, timeout_s=120)
    answers = answered_ids(records)
    assert set(answers) == wanted, where_lost(broker.bootstrap, sorted(wanted - set(answers)))

    # a replayed turn may reach the topic again, but always under the same derived id ...
    ids_per_message: dict[str, set[str]] = defaultdict(set)
    for record in records:
        data = json.loads(record.value)
        answer_id = data.get("reply_id") or data["escalation_id"]
        ids_per_message[data.get("in_reply_to") or data["message_id"]].add(answer_id)
    assert all(len(ids) == 1 for ids in ids_per_message.values())
    # ... so the sender, which delivers by id, sends each reply exactly once
    view = ConversationView()
    delivered = Counter()
    for record in records:
        record_type = OutboundMessage if record.topic == "sf.outbound" else Escalation
        parsed = record_type.model_validate_json(record.value)
        if view.add_record(parsed):
            delivered[parsed.in_reply_to if isinstance(parsed, OutboundMessage) else parsed.message_id] += 1
    assert set(delivered) == wanted and set(delivered.values()) == {1}

    sessions = read_topics(broker.bootstrap, ["supportflow-sessions-changelog"], until=lambda rs: False, timeout_s=3)
    latest = {}
    for record in sessions:
        latest[record.key.decode()] = json.loads(record.value)
    assert len(latest) == 40
    assert {s["turn_count"] for s in latest.values()} == {5}, "turn counts survived the crash, none counted twice"
