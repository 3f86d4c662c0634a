"""Workers share the partitions; joining or leaving moves conversations, with their state, without loss."""

from __future__ import annotations

import json

from tests.support.conversations import conversation_traffic
from tests.support.stream import answered_ids, produce_messages, read_answers, read_topics, where_lost


def test_a_worker_joining_and_another_leaving_moves_conversations_with_their_sessions(broker, workers):
    first = workers.start()
    messages = conversation_traffic(conversations=20, per_conversation=6, prefix="tw")
    thirds = [messages[:40], messages[40:80], messages[80:]]

    produce_messages(broker.bootstrap, thirds[0])
    read_answers(broker.bootstrap, {m["message_id"] for m in thirds[0]})

    second = workers.start()  # takes over part of the partitions, recovering their sessions
    produce_messages(broker.bootstrap, thirds[1])
    read_answers(broker.bootstrap, {m["message_id"] for m in messages[:80]})
    for log_file in workers.tmp_path.glob("worker-*.log"):
        assert "Traceback" not in log_file.read_text()

    workers.stop(first)  # the survivor takes over the rest
    produce_messages(broker.bootstrap, thirds[2])
    wanted = {m["message_id"] for m in messages}
    records = read_answers(broker.bootstrap, wanted, timeout_s=120)
    answers = answered_ids(records)
    assert set(answers) == wanted, where_lost(broker.bootstrap, sorted(wanted - set(answers)))
    assert len(answers) == len(wanted), "a graceful hand-over replays nothing"
    assert second.poll() is None

    # every conversation's session followed it from worker to worker: no turn was forgotten
    changelog = read_topics(broker.bootstrap, ["supportflow-sessions-changelog"], until=lambda rs: False, timeout_s=3)
    latest = {r.key: json.loads(r.value) for r in changelog}
    assert len(latest) == 20
    assert {s["turn_count"] for s in latest.values()} == {6}
    assert {s["session_id"].rsplit("-", 1)[1] for s in latest.values()} == {"s1"}
