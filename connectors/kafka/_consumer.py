"""Consumers: the one consumer configuration, group-less readers, dead letters of unreadable records."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from schemas import DeadLetter

log = logging.getLogger("connectors.kafka")


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def consumer_config(
    conf: dict[str, Any],
    group_id: str,
    *,
    fetch_max_wait_ms: int = 10,
    from_earliest: bool = False,
    group_member: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Every consumer of supportflow is configured here: offsets are committed by hand, after the work.

    `group_member`: the consumer subscribes and shares partitions, with the short session that
    makes a dead member's partitions move quickly (and the first join short on tansu).
    `from_earliest`: a group with no committed offset starts at the beginning.
    """
    config: dict[str, Any] = {
        **conf,
        "group.id": group_id,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": fetch_max_wait_ms,
        "log.connection.close": False,
        "logger": log,  # librdkafka's messages go through logging, not straight to stderr
    }
    if from_earliest:
        config["auto.offset.reset"] = "earliest"
    if group_member:
        config["session.timeout.ms"] = 6000
        config["heartbeat.interval.ms"] = 1000
    config.update(extra)
    return config


def make_reader(
    conf: dict[str, Any], topics: Iterable[str], from_beginning: bool, fetch_max_wait_ms: int = 10
) -> Consumer:
    """A consumer with no group: assigned every partition directly, so it starts reading at once.

    Group membership would cost a join (seconds on tansu) and is not wanted by tools and views
    that read a whole topic. Reading from the end, each partition's end is looked up here, before
    this returns: a symbolic OFFSET_END is resolved only at the partition's first fetch, so a record
    written in between would be skipped by a reader that already said it was reading.
    """
    consumer = Consumer(consumer_config(conf, "supportflow-reader", fetch_max_wait_ms=fetch_max_wait_ms))
    metadata = consumer.list_topics(timeout=10)
    partitions = [TopicPartition(topic, p) for topic in topics for p in metadata.topics[topic].partitions]
    if from_beginning:
        assignment = [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
    else:
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
        assignment = [TopicPartition(tp.topic, tp.partition, end) for tp, end in zip(partitions, ends, strict=True)]
    consumer.assign(assignment)
    return consumer


def consume_all(consumer: Consumer, idle_s: float, max_s: float) -> Iterator[KafkaRecord]:
    """Yield records until none arrives for `idle_s` (or `max_s` passes)."""
    deadline = time.monotonic() + max_s
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < idle_s:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("kafka read error: %s", msg.error())
            continue
        last = time.monotonic()
        yield KafkaRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])


class BackgroundReader:
    """Reads topics from their end in a thread and hands each record to a callback on the loop."""

    def __init__(
        self,
        conf: dict[str, Any],
        topics: list[str],
        on_record: Callable[[KafkaRecord], None],
        fetch_max_wait_ms: int = 10,
    ) -> None:
        self._consumer = make_reader(conf, topics, from_beginning=False, fetch_max_wait_ms=fetch_max_wait_ms)
        self._on_record = on_record
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="kafka-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._loop is not None
        while not self._closed.is_set():
            # a fetch's worth at once, handed to the loop in one call: one wake-up of the loop per batch,
            # where one per record cost the ingress a fifth of its samples under load (bench --profile)
            batch = self._consumer.consume(num_messages=500, timeout=0.1)
            records = [
                KafkaRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])
                for msg in batch
                if not msg.error()
            ]
            if records:
                self._loop.call_soon_threadsafe(self._hand_over, records)
        self._consumer.close()

    def _hand_over(self, records: list[KafkaRecord]) -> None:
        for record in records:
            try:
                self._on_record(record)
            except Exception:  # as when each record had a call of its own: one bad record stops no other
                log.exception(
                    "the reader's callback failed on %s[%d]@%d", record.topic, record.partition, record.offset
                )

    def close(self) -> None:
        self._closed.set()
        if self._thread:
            self._thread.join(timeout=2)


def dead_letter_of(message: KafkaMessage, stage: str, exc: Exception, operator: str = "decode") -> DeadLetter:
    """A consumed record no one could read, kept whole with the reason; its id is its place in the log,
    so dead-lettering it again after a replay is the same letter."""
    value = message.value() or b""
    key = message.key()
    place = f"{message.topic()}:{message.partition()}:{message.offset()}"
    return DeadLetter(
        dead_letter_id="d-" + hashlib.sha256(place.encode()).hexdigest()[:24],
        stage=stage,
        operator=operator,
        error_type=type(exc).__name__,
        error=str(exc)[:2000],
        source_topic=message.topic() or "",
        partition=message.partition(),
        offset=message.offset(),
        key=key.decode("utf-8", "replace") if key else None,
        original=value.decode("utf-8", "replace"),
        original_b64=base64.b64encode(value).decode(),
    )
