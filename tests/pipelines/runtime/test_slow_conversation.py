"""A slow step in one conversation must not stall the others, and keeps that conversation's order."""

from __future__ import annotations

import time

from pipelines.runtime.settings import PROJECT_DIR
from tests.support.stream import answered_ids, produce_messages, raw_message, read_answers

SLOW_SECONDS = 4.0


def test_a_sleeping_conversation_does_not_hold_up_the_rest(broker, workers, tmp_path):
    topology = (PROJECT_DIR / "topology.yaml").read_text()
    patched = topology.replace(
        "      - nlu_model:",
        "      - tests.support.slow_operator:SleepForOneCustomer:\n"
        f"          config: {{customer_id: slow, seconds: {SLOW_SECONDS}}}\n"
        "      - nlu_model:",
        1,
    )
    assert patched != topology
    path = tmp_path / "topology.yaml"
    path.write_text(patched)
    workers.start(topology=path)

    slow = [raw_message(f"slow-{i}", "webchat", "slow-web", f"where is my order 123456{i}?", "slow") for i in range(3)]
    fast = [raw_message(f"fast-{i}", "sms", f"+1555{i:07d}", "how do I get a refund?") for i in range(30)]
    started_ms = time.time() * 1000
    produce_messages(broker.bootstrap, slow[:1] + fast + slow[1:])
    wanted = {m["message_id"] for m in fast + slow}
    records = read_answers(broker.bootstrap, wanted, timeout_s=60)
    answers = answered_ids(records)
    answered_at = {a: r.timestamp_ms - started_ms for a, r in zip(answers, records, strict=True)}
    assert set(answered_at) == wanted
    last_fast = max(answered_at[m["message_id"]] for m in fast)
    assert last_fast < SLOW_SECONDS * 1000 / 2, f"the fast conversations waited for the slow one ({last_fast:.0f} ms)"
    assert answered_at["slow-0"] >= SLOW_SECONDS * 1000
    order = [i for i in answered_ids(records) if i.startswith("slow-")]
    assert order == ["slow-0", "slow-1", "slow-2"], "the slow conversation kept its own order"
