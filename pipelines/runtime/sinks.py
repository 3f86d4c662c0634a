"""Sinks: topics into the conversation store (Postgres) and the analytics table (ClickHouse).

A sink is a consumer group running the one consumer loop (`consumer_loop.ConsumerLoop`): it
reads a batch, writes it whole, and only then commits the batch's offsets. A crash between
write and commit replays the batch, and the stores are idempotent by record id, so the result is
every record once. A write that fails is retried with backoff until it succeeds or the sink is
stopped, as long as the store is away; a record the store refuses for what it holds (a NUL in a
PostgreSQL text) is found by bisecting the batch and goes to the dead-letter topic with its
reason, as does a record that does not parse; their offsets are committed. This module says what
each store keeps and how, and which of its failures blame the data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

from confluent_kafka import Consumer

from connectors.kafka import consumer_config
from connectors.postgres.errors import is_data_error as postgres_data_error
from connectors.protocols import ConversationStore, EventStore
from pipelines.runtime.consumer_loop import Writer, never_data_error
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from schemas import (
    CallRecording,
    ConversationEvent,
    CustomerProfile,
    DeliveryStatus,
    Escalation,
    Feedback,
    Message,
    OutboundMessage,
    Record,
)

log = logging.getLogger(__name__)

__all__ = [
    "SINK_RECORDS_BY_TARGET",
    "SinkTarget",
    "clickhouse_writer",
    "data_errors",
    "postgres_writer",
    "sink_topics",
    "wait_until_caught_up",
]

SinkTarget = Literal["postgres", "clickhouse"]

# What each sink stores, by record type; the topology says which topic carries each type.
SINK_RECORDS_BY_TARGET: dict[str, tuple[type[Record], ...]] = {
    "postgres": (
        Message,
        OutboundMessage,
        Escalation,
        ConversationEvent,
        CustomerProfile,
        Feedback,
        DeliveryStatus,
        CallRecording,
    ),
    "clickhouse": (ConversationEvent, Feedback),
}


def sink_topics(topology: Topology, target: str) -> list[str]:
    """The topics a sink reads; a record type no topic carries is simply not stored."""
    topics = [topology.topic_for(t) for t in SINK_RECORDS_BY_TARGET[target]]
    return [t for t in topics if t is not None]


def clickhouse_writer(store: EventStore) -> Writer:
    async def write(topic: str, records: Sequence[Record]) -> int:
        return await store.insert([r for r in records if isinstance(r, ConversationEvent | Feedback)])

    return write


def postgres_writer(store: ConversationStore) -> Writer:
    return store.write


def data_errors(target: SinkTarget) -> Callable[[Exception], bool]:
    """Which failures of `target`'s writes blame the records, so the sink dead-letters the culprit.

    PostgreSQL names them by SQLSTATE (connectors/postgres/errors.py). ClickHouse's String takes
    any bytes and every record is validated before it is written, so no record-caused failure of
    it is known: all count as outages, retried and never dead-lettered.
    """
    return postgres_data_error if target == "postgres" else never_data_error


def wait_until_caught_up(
    settings: Settings, topology: Topology, targets: Sequence[str], timeout_s: float = 15.0, group_prefix: str = ""
) -> bool:
    """Whether every sink group committed up to the end of its topics within `timeout_s`.

    Used before an orderly stop, so what the workers produced reaches the stores first. (On
    tansu the end offset can trail the last record of a batch; the caller allows one more batch.)
    """
    from confluent_kafka import TopicPartition

    deadline = time.monotonic() + timeout_s
    conf = settings.kafka_client_config()
    for target in targets:
        group = f"{group_prefix or topology.spec.app_id + '-sink'}-{target}"
        consumer = Consumer(consumer_config(conf, group))
        try:
            partitions = [  # the broker's count: the embedded stack caps the topology's (max_partitions)
                TopicPartition(topic, p)
                for topic in sink_topics(topology, target)
                for p in sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            ]
            ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in partitions}
            while True:
                committed = consumer.committed(partitions, timeout=5)
                behind = [tp for tp in committed if ends[(tp.topic, tp.partition)] > max(tp.offset, 0)]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
        finally:
            consumer.close()
    return True
