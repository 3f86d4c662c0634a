"""Triton dies while the pipeline runs: every message is still answered once, by the in-process model."""

from __future__ import annotations

import json
import threading

from connectors.triton import EmbeddedTriton
from pipelines.runtime.settings import PROJECT_DIR
from tests.support.conversations import conversation_traffic
from tests.support.stream import answered_ids, produce_messages, read_answers, read_topics
from tests.support.triton import _require_pytriton

TRITON = "triton:intent_classifier:1"
IN_PROCESS = "onnxruntime:intent_classifier:1"


def test_killing_triton_mid_stream_degrades_to_in_process_and_loses_nothing(broker, workers, tmp_path):
    _require_pytriton()
    triton = EmbeddedTriton(PROJECT_DIR / "triton_models", log_file=tmp_path / "tritonserver.log").start(120)
    try:
        workers.start(SUPPORTFLOW_TRITON_URL=triton.grpc_url)
        messages = conversation_traffic(conversations=30, per_conversation=6, prefix="outage")
        wanted = {m["message_id"] for m in messages}
        first, second = messages[:60], messages[60:]
        produce_messages(broker.bootstrap, first)
        read_answers(broker.bootstrap, {m["message_id"] for m in first}, timeout_s=90)

        producing = threading.Thread(target=produce_messages, args=(broker.bootstrap, second, 0.01))
        producing.start()
        triton.kill()  # SIGKILL while the rest streams in
        producing.join()

        records = read_answers(broker.bootstrap, wanted, timeout_s=120)
    finally:
        triton.stop()
    answers = answered_ids(records)
    assert set(answers) == wanted, f"lost: {sorted(wanted - set(answers))[:5]}"
    assert len(answers) == len(wanted), "a message was answered twice"

    events = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: len(rs) >= len(wanted))
    served_by = {json.loads(r.value)["message"]["id"]: json.loads(r.value)["metadata"]["model_used"] for r in events}
    assert {served_by[m["message_id"]] for m in first} == {TRITON}, "Triton answered while it was up"
    assert IN_PROCESS in {served_by[m["message_id"]] for m in second}, "the in-process model took over"
    assert "unavailable" not in served_by.values()
