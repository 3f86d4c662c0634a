"""Sinks: topics into the conversation store (Postgres) and the analytics table (ClickHouse).

A sink is a consumer group that reads a batch, writes it whole, and only then commits the
batch's offsets. A crash between write and commit replays the batch, and the stores are
idempotent by record id, so the result is every record once. A write that fails is retried
with backoff until it succeeds or the sink is stopped; it is never skipped. A record that does
not parse goes to the dead-letter topic with its reason, and its offset is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import Message as KafkaMessage
from pydantic import ValidationError

from connectors.kafka import AsyncProducer, dead_letter_of
from connectors.protocols import ConversationStore, EventStore
from pipelines.runtime.metrics import SINK_BATCH_SECONDS, SINK_RECORDS, SINK_WRITE_FAILURES
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from schemas import (
    CallRecording,
    ConversationEvent,
    CustomerProfile,
    DeadLetter,
    DeliveryStatus,
    Escalation,
    Feedback,
    Message,
    OutboundMessage,
    Record,
    record_types,
)

log = logging.getLogger(__name__)

__all__ = ["SINK_RECORDS_BY_TARGET", "SinkRunner", "SinkTarget", "Writer", "sink_topics"]

SinkTarget = Literal["postgres", "clickhouse"]
Writer = Callable[[str, Sequence[Record]], Awaitable[int]]

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


@dataclass
class _Batch:
    by_topic: dict[str, list[Record]] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    size: int = 0


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
        consumer = Consumer({**conf, "group.id": group, "enable.auto.commit": False, "logger": log})
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in sink_topics(topology, target)
                for p in range(topology.spec.topics[topic].partitions or 1)
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


class SinkRunner:
    """One sink: a consumer group over `topics`, writing each batch through `write`."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        topology: Topology,
        topics: list[str],
        write: Writer,
        group_id: str | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.topics = topics
        self.write = write
        self.dead_letter_topic = topology.spec.dead_letter_topic
        types = record_types()
        self.record_type = {t: types[topology.spec.topics[t].record] for t in topics}
        self.group_id = group_id or f"{topology.spec.app_id}-sink-{name}"
        self._stopping = asyncio.Event()
        self._kafka = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sink-{name}")  # one thread per consumer
        self.records_written = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Consume, write, commit until `stop()`; the last batch is finished first."""
        consumer = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
                "fetch.wait.max.ms": self.settings.fetch_max_wait_ms,
                "log.connection.close": False,
                "logger": log,
            }
        )
        dead_letters = AsyncProducer(self.settings.kafka_client_config(), exact_offsets=self.settings.exact_offsets)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._kafka, consumer.subscribe, self.topics)
            if ready is not None:
                ready.set()
            wait_s = self.settings.sink_batch_wait_ms / 1000
            while not self._stopping.is_set():
                messages = await loop.run_in_executor(
                    self._kafka, consumer.consume, self.settings.sink_batch_size, wait_s
                )
                if not messages:
                    continue
                batch = self._decode(messages)
                if not await self._write_until_done(batch):
                    return  # stopped while the store was failing: leave the batch uncommitted
                for letter in batch.dead:
                    await dead_letters.send(self.dead_letter_topic, letter.key, letter.to_bytes())
                await loop.run_in_executor(self._kafka, self._commit, consumer)
        finally:
            dead_letters.close()
            await loop.run_in_executor(self._kafka, consumer.close)
            self._kafka.shutdown(wait=False)

    def _decode(self, messages: list[KafkaMessage]) -> _Batch:
        batch = _Batch()
        for message in messages:
            if message.error():
                log.warning("sink %s: consumer error %s", self.name, message.error())
                continue
            topic, value = message.topic(), message.value() or b""
            try:
                record = self.record_type[topic].model_validate_json(value)
            except (ValidationError, ValueError) as exc:
                batch.dead.append(dead_letter_of(message, f"sink:{self.name}", exc))
                continue
            batch.by_topic.setdefault(topic, []).append(record)
            batch.size += 1
        return batch

    async def _write_until_done(self, batch: _Batch) -> bool:
        delay = 0.2
        for topic, records in batch.by_topic.items():
            while True:
                started = time.perf_counter()
                try:
                    await self.write(topic, records)
                except Exception as exc:  # the store is down or refused: retry, never skip
                    SINK_WRITE_FAILURES.labels(self.name).inc()
                    log.warning(
                        "sink %s: writing %d %s record(s) failed (%s); retrying in %.1fs",
                        self.name,
                        len(records),
                        topic,
                        exc,
                        delay,
                    )
                    try:
                        await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                        return False
                    except TimeoutError:
                        delay = min(delay * 2, 30.0)
                        continue
                SINK_BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
                SINK_RECORDS.labels(self.name, topic).inc(len(records))
                self.records_written += len(records)
                break
        return True

    def _commit(self, consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:  # a rebalance took the partitions: their new owner rewrites, idempotently
            log.info("sink %s: commit skipped (%s)", self.name, exc)
