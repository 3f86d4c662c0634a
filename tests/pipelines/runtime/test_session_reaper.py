"""An idle session is closed by the reaper with a session_closed event; the next message opens a new one."""

from __future__ import annotations

import json

from pipelines.runtime.settings import PROJECT_DIR
from tests.support.stream import answered_ids, produce_messages, raw_message, read_answers, read_topics


def test_idle_session_closes_with_an_event_and_the_next_turn_starts_session_two(broker, workers, tmp_path):
    topology = (PROJECT_DIR / "topology.yaml").read_text()
    patched = topology.replace("config: {session_idle_minutes: 30}", "config: {session_idle_minutes: 0.03}")
    assert patched != topology
    path = tmp_path / "topology.yaml"
    path.write_text(patched)
    workers.start(topology=path, SUPPORTFLOW_SESSION_REAPER_INTERVAL_S="0.5")

    produce_messages(
        broker.bootstrap, [raw_message("idle-1", "webchat", "w-idle", "where is my order 1234567?", "idle")]
    )

    def closed(records):
        return [json.loads(r.value) for r in records if json.loads(r.value)["event_type"] == "session_closed"]

    events = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: bool(closed(rs)), timeout_s=30)
    [event] = closed(events)
    assert (event["customer_id"], event["session_id"]) == ("idle", "idle-s1")

    produce_messages(broker.bootstrap, [raw_message("idle-2", "webchat", "w-idle", "and my refund?", "idle")])
    events = read_topics(
        broker.bootstrap,
        ["sf.events"],
        until=lambda rs: "idle-2" in {(json.loads(r.value).get("message") or {}).get("id") for r in rs},
    )
    turn = next(json.loads(r.value) for r in events if (json.loads(r.value).get("message") or {}).get("id") == "idle-2")
    assert turn["session_id"] == "idle-s2"
    assert len(closed(events)) >= 1
    answers = read_answers(broker.bootstrap, {"idle-1", "idle-2"})
    assert sorted(answered_ids(answers)) == ["idle-1", "idle-2"]
