"""Which processes of the embedded stack poll the broker often, and which do not."""

from __future__ import annotations

from pipelines.devstack.stack import Stack
from pipelines.runtime.settings import Settings


def _stack(**settings: object) -> Stack:
    return Stack(Settings(kafka_bootstrap_servers="127.0.0.1:9092", kafka_exact_offsets=True, **settings))


def test_readers_off_the_reply_path_fetch_less_often_than_the_reply_path():
    stack = _stack()
    reply_path = stack.worker_env()["SUPPORTFLOW_KAFKA_FETCH_MAX_WAIT_MS"]
    background = stack.background_env()["SUPPORTFLOW_KAFKA_FETCH_MAX_WAIT_MS"]
    assert (reply_path, background) == ("10", "500")


def test_a_background_wait_never_makes_a_reader_poll_more_often_than_the_reply_path():
    stack = _stack(kafka_fetch_max_wait_ms=800, kafka_background_fetch_max_wait_ms=100)
    assert stack.background_env()["SUPPORTFLOW_KAFKA_FETCH_MAX_WAIT_MS"] == "800"


def test_every_process_of_an_embedded_stack_sees_topics_capped_at_two_partitions():
    stack = _stack()
    assert stack.worker_env()["SUPPORTFLOW_KAFKA_MAX_PARTITIONS"] == "2"
    counts = {name: topic.partitions for name, topic in stack.topology.spec.topics.items()}
    assert counts["sf.ingress"] == counts["sf.messages"] == 2 and counts["sf.workspace.state"] == 1


def test_a_stack_on_a_real_kafka_keeps_the_topologys_partition_counts():
    stack = Stack(Settings(kafka_bootstrap_servers="127.0.0.1:9092"))
    assert "SUPPORTFLOW_KAFKA_MAX_PARTITIONS" not in stack.worker_env()
    assert stack.topology.spec.topics["sf.ingress"].partitions == 8
