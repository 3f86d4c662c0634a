"""`supportflow replay`: re-materialize a sink from a retained topic.

Reads the topic from the first offset at or after `--from` (by record timestamp) up to the end
it had when the replay started, and writes it in batches through the same writer the live sink
uses. The stores are idempotent by record id, so replaying into a populated store, or twice,
changes nothing; replaying into an empty one rebuilds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition
from pydantic import ValidationError

from connectors.kafka import consumer_config
from pipelines.runtime.consumer_loop import Writer
from pipelines.runtime.settings import Settings
from schemas import Record

__all__ = ["ReplayResult", "plan_replay", "replay_topic"]

DRAIN_S = 10.0


@dataclass
class ReplayResult:
    read: int = 0
    written: int = 0
    skipped_before: int = 0
    invalid: int = 0


@dataclass(frozen=True)
class ReplayPlan:
    start: list[TopicPartition]
    end: dict[int, int]

    @property
    def total(self) -> int:
        return sum(max(0, self.end[tp.partition] - max(tp.offset, 0)) for tp in self.start)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        consumer_config(
            settings.kafka_client_config(), "supportflow-replay", fetch_max_wait_ms=settings.fetch_max_wait_ms
        )
    )


def plan_replay(consumer: Consumer, topic: str, since: datetime) -> ReplayPlan:
    """Where each partition starts (first record at or after `since`) and where it ends now."""
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise LookupError(f"topic {topic!r} does not exist on the cluster")
    partitions = sorted(metadata.partitions)
    millis = int(since.timestamp() * 1000)
    starts = consumer.offsets_for_times([TopicPartition(topic, p, millis) for p in partitions], timeout=10)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    start = []
    for tp in starts:
        low = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[0]
        offset = tp.offset if tp.offset >= 0 else ends[tp.partition]  # no record that late: nothing to read
        start.append(TopicPartition(topic, tp.partition, max(offset, low)))
    return ReplayPlan(start, ends)


async def replay_topic(
    settings: Settings,
    topic: str,
    record_type: type[Record],
    since: datetime,
    write: Writer,
    batch_size: int = 5000,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay `topic` from `since` into `write`; `on_progress(done, total)` after each batch."""
    consumer = _consumer(settings)
    result = ReplayResult()
    try:
        plan = plan_replay(consumer, topic, since)
        remaining = {tp.partition for tp in plan.start if tp.offset < plan.end[tp.partition]}
        consumer.assign(plan.start)
        since_ms = int(since.timestamp() * 1000)
        if on_progress:
            on_progress(0, plan.total)
        drain_until: float | None = None
        while True:
            messages = consumer.consume(batch_size, 0.5 if drain_until else 1.0)
            batch: list[Record] = []
            for message in messages:
                if message.error():
                    continue
                if message.offset() + 1 >= plan.end[message.partition()]:
                    remaining.discard(message.partition())
                result.read += 1
                if message.timestamp()[1] < since_ms:  # brokers may answer a time lookup coarsely
                    result.skipped_before += 1
                    continue
                try:
                    batch.append(record_type.model_validate_json(message.value() or b""))
                except (ValidationError, ValueError):
                    result.invalid += 1
            if batch:
                await write(topic, batch)
                result.written += len(batch)
            if on_progress:
                on_progress(min(result.read, plan.total), plan.total)
            if not remaining:
                # Past the planned end, read on until the topic goes quiet (at most DRAIN_S): a broker
                # whose end offset lags its last batch (tansu) would otherwise leave records behind.
                # Records written by the live sink meanwhile are rewritten harmlessly (idempotent).
                now = time.monotonic()
                drain_until = drain_until or now + DRAIN_S
                if not messages or now > drain_until:
                    break
    finally:
        consumer.close()
    return result
