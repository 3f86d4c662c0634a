"""Two workers share the partitions; stopping one hands its conversations to the other."""

from __future__ import annotations

from tests.pipelines.conversations import conversation_traffic
from tests.support import answered_ids, produce_messages, read_answers


def test_stopping_one_of_two_workers_moves_its_conversations_without_loss(broker, workers):
    first = workers.start()
    second = workers.start()
    messages = conversation_traffic(conversations=20, per_conversation=6, prefix="tw")
    half = len(messages) // 2
    produce_messages(broker.bootstrap, messages[:half])
    before = {m["message_id"] for m in messages[:half]}
    read_answers(broker.bootstrap, before, timeout_s=90)
    for log_file in workers.tmp_path.glob("worker-*.log"):
        assert "Traceback" not in log_file.read_text()

    workers.stop(first)
    produce_messages(broker.bootstrap, messages[half:])
    wanted = {m["message_id"] for m in messages}
    records = read_answers(broker.bootstrap, wanted, timeout_s=120)
    answers = answered_ids(records)
    assert set(answers) == wanted, f"lost: {sorted(wanted - set(answers))[:5]}"
    assert len(answers) == len(wanted), "a graceful hand-over replays nothing"
    assert second.poll() is None
