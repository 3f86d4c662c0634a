"""The one batch consumer loop: consume a batch, hand each record to a sink, flush, then commit.

Every process outside the faust workers that turns a topic into effects runs this loop: the
store sinks (PostgreSQL, ClickHouse), the channel senders and the escalation router. The sink
contract is Quix Streams' (`add` each record, `flush` the batch): the loop decodes records by
their topic's type, dead-letters what does not parse (or what `add` refuses), and commits a
batch's offsets only after `flush` returned. A crash between flush and commit replays the
batch, so sinks are idempotent by record id.

A failing flush is never skipped. The sink says whether a failure blames the data
(`is_data_error`): anything else (the store down, a connection refused) is an outage, retried
with backoff for as long as it lasts, dead-lettering nothing. A batch that still fails on its
data after `flush_attempts` is bisected: each half is written on its own, and a record that
fails alone goes to the dead-letter topic with its reason and place (topic, partition, offset),
so one customer's bad record cannot halt everyone behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from connectors.kafka import AsyncProducer, consumer_config, dead_letter_of
from pipelines.runtime.metrics import SINK_BATCH_SECONDS, SINK_DEAD_LETTERS, SINK_RECORDS, SINK_WRITE_FAILURES
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from schemas import DeadLetter, Record, record_types

log = logging.getLogger(__name__)

__all__ = ["BatchSink", "ConsumerLoop", "TopicWriterSink", "Writer", "never_data_error"]

Writer = Callable[[str, Sequence[Record]], Awaitable[int]]
"""Writes one topic's records of a batch (idempotently) and returns how many it wrote."""


class BatchSink(Protocol):
    """Where a consumer loop's records go: `add` each record of a batch, then `flush` the batch.

    `add` raising means the sink can never take that record: the loop dead-letters it. `flush`
    takes everything added since the last flush, or raises; either way the sink holds nothing
    afterwards, and the loop adds again what it retries. `is_data_error(exc)` says whether a
    failed flush blames the records (retrying cannot help: bisect and dead-letter the culprit)
    rather than the store being away (retry until it is back).
    """

    def add(self, topic: str, record: Record) -> None: ...

    async def flush(self) -> None: ...

    def is_data_error(self, exc: Exception) -> bool: ...


def never_data_error(exc: Exception) -> bool:
    """The classifier of a sink that knows no failure of its store to be about the data: all are outages."""
    return False


class TopicWriterSink:
    """A sink that writes each topic's share of the batch with one `write` call (stores, senders).

    `data_errors` is the store's classifier (connectors/postgres/errors.py for PostgreSQL);
    without one every failure counts as an outage and is retried, never dead-lettered.
    """

    def __init__(self, name: str, write: Writer, data_errors: Callable[[Exception], bool] = never_data_error) -> None:
        self.name = name
        self.write = write
        self.data_errors = data_errors
        self._by_topic: dict[str, list[Record]] = {}
        self.records_written = 0

    def add(self, topic: str, record: Record) -> None:
        self._by_topic.setdefault(topic, []).append(record)

    async def flush(self) -> None:
        batch, self._by_topic = self._by_topic, {}
        for topic, records in batch.items():
            started = time.perf_counter()
            await self.write(topic, records)
            SINK_BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            SINK_RECORDS.labels(self.name, topic).inc(len(records))
            self.records_written += len(records)

    def is_data_error(self, exc: Exception) -> bool:
        return self.data_errors(exc)


@dataclass(frozen=True)
class _Item:
    """A decoded record of the batch in hand, with the message it came in (its place, for a dead letter)."""

    message: KafkaMessage
    record: Record

    @property
    def topic(self) -> str:
        return self.message.topic() or ""


class ConsumerLoop:
    """One consumer over `topics` feeding `sink`, until `stop()`.

        `group_member=True` subscribes in a consumer group (sinks, senders: replicas share the
        partitions); False assigns every partition to this one process and resumes at the committed
        offsets (the router: one instance, no join to wait for). `fill_batches`: wait up to
        `wait_s` for a full batch (throughput); otherwise hand over whatever arrived as soon as the
        first record does (latency). `tick` runs once per cycle, batch or not (timers). With
    `retry_flush=False` a failing flush ends `run` with its exception (a process that restores its
    state on restart, like the router, is better restarted than retried). Otherwise a flush that
    fails on its data is tried `flush_attempts` times, then bisected (see the module docstring).
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        topology: Topology,
        topics: list[str],
        sink: BatchSink,
        group_id: str | None = None,
        *,
        group_member: bool = True,
        batch_size: int | None = None,
        wait_s: float | None = None,
        fill_batches: bool = True,
        commit_async: bool = False,
        retry_flush: bool = True,
        flush_attempts: int = 3,
        dead_letter_stage: str | None = None,
        tick: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.topics = topics
        self.sink = sink
        self.dead_letter_topic = topology.spec.dead_letter_topic
        types = record_types()
        self.record_type = {t: types[topology.spec.topics[t].record] for t in topics}
        self.group_id = group_id or f"{topology.spec.app_id}-sink-{name}"
        self.group_member = group_member
        self.batch_size = batch_size or settings.sink_batch_size
        self.wait_s = wait_s if wait_s is not None else settings.sink_batch_wait_ms / 1000
        self.fill_batches = fill_batches
        self.commit_async = commit_async
        self.retry_flush = retry_flush
        self.flush_attempts = flush_attempts
        self.dead_letter_stage = dead_letter_stage or f"sink:{name}"
        self.tick = tick
        self.records_consumed = 0
        self._stopping = asyncio.Event()
        self._kafka = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"loop-{name}")  # one thread per consumer
        self._consumer: Consumer | None = None
        self._offsets: dict[tuple[str, int], int] = {}

    @property
    def records_written(self) -> int:
        return int(getattr(self.sink, "records_written", self.records_consumed))

    def stop(self) -> None:
        self._stopping.set()

    async def open(self) -> None:
        """Subscribe (or assign); idempotent. `run` calls it when not done before."""
        if self._consumer is None:
            loop = asyncio.get_running_loop()
            self._consumer = await loop.run_in_executor(self._kafka, self._open_consumer)

    def _open_consumer(self) -> Consumer:
        conf = consumer_config(
            self.settings.kafka_client_config(),
            self.group_id,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            from_earliest=True,
            group_member=self.group_member,
        )
        consumer = Consumer(conf)
        if self.group_member:
            consumer.subscribe(self.topics)
            return consumer
        metadata = consumer.list_topics(timeout=10)
        missing = [t for t in self.topics if t not in metadata.topics]
        if missing:
            consumer.close()
            raise RuntimeError(f"topics {missing} do not exist: create the topology's topics first")
        consumer.assign(
            [TopicPartition(t, p, OFFSET_STORED) for t in self.topics for p in sorted(metadata.topics[t].partitions)]
        )
        return consumer

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Consume, add, flush, commit until `stop()`; the batch in hand is finished first."""
        await self.open()
        dead_letters = AsyncProducer(self.settings.kafka_client_config(), exact_offsets=self.settings.exact_offsets)
        loop = asyncio.get_running_loop()
        try:
            if ready is not None:
                ready.set()
            while not self._stopping.is_set():
                messages = await loop.run_in_executor(self._kafka, self._fetch)
                if messages:
                    offsets, items, dead = self._decode(messages)
                    if not await self._write(items, dead):
                        return  # stopped while the sink was failing: leave the batch uncommitted
                    for letter in dead:
                        await dead_letters.send(self.dead_letter_topic, letter.key, letter.to_bytes())
                    self._offsets.update(offsets)
                    commits = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                    if commits:
                        await loop.run_in_executor(self._kafka, self._commit, commits, self.commit_async)
                if self.tick is not None:
                    await self.tick()
        finally:
            dead_letters.close()
            await self.aclose()

    async def aclose(self) -> None:
        """Commit what is done and close the consumer; idempotent (a loop opened but never run, too)."""
        if self._consumer is not None:
            await asyncio.get_running_loop().run_in_executor(self._kafka, self._close)
        self._kafka.shutdown(wait=False)

    def _fetch(self) -> list[KafkaMessage]:
        assert self._consumer is not None
        if self.fill_batches:
            return list(self._consumer.consume(self.batch_size, self.wait_s))
        first = self._consumer.poll(self.wait_s)  # consume() would wait for a full batch
        if first is None:
            return []
        return [first, *self._consumer.consume(self.batch_size - 1, 0)]

    def _decode(self, messages: list[KafkaMessage]) -> tuple[dict[tuple[str, int], int], list[_Item], list[DeadLetter]]:
        offsets: dict[tuple[str, int], int] = {}
        items: list[_Item] = []
        dead: list[DeadLetter] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error %s", self.name, error)
                continue
            topic, value = message.topic(), message.value() or b""
            offsets[(topic, message.partition())] = message.offset() + 1
            try:
                items.append(_Item(message, self.record_type[topic].model_validate_json(value)))
            except (ValidationError, ValueError) as exc:
                dead.append(dead_letter_of(message, self.dead_letter_stage, exc))
        return offsets, items, dead

    def _add(self, items: list[_Item], dead: list[DeadLetter]) -> list[_Item]:
        """Hand `items` to the sink; those it refuses are dead-lettered. Returns the ones it took."""
        taken = []
        for item in items:
            try:
                self.sink.add(item.topic, item.record)
            except Exception as exc:  # whatever the sink cannot take must not halt the records behind it
                self._set_aside(item, exc, "add", dead)
                continue
            taken.append(item)
        return taken

    def _set_aside(self, item: _Item, exc: Exception, operator: str, dead: list[DeadLetter]) -> None:
        message = item.message
        log.warning(
            "%s: record %s/%s@%s dead-lettered (%s): %s: %s",
            self.name,
            message.topic(),
            message.partition(),
            message.offset(),
            operator,
            type(exc).__name__,
            exc,
        )
        SINK_DEAD_LETTERS.labels(self.name).inc()
        dead.append(dead_letter_of(message, self.dead_letter_stage, exc, operator=operator))

    async def _write(self, items: list[_Item], dead: list[DeadLetter]) -> bool:
        """Add and flush the batch; bisect it when it keeps failing on its data. False: stopped first."""
        taken = self._add(items, dead)
        self.records_consumed += len(taken)
        if not self.retry_flush:
            await self.sink.flush()
            return True
        try:
            return await self._flush(taken, dead, self.flush_attempts, added=True)
        except Exception as exc:  # the data's fault, `flush_attempts` times over
            return await self._bisect(taken, exc, dead)

    async def _bisect(self, items: list[_Item], exc: Exception, dead: list[DeadLetter]) -> bool:
        """Find the records of `items` (which failed with `exc`) that fail alone; dead-letter them, write the rest."""
        if len(items) <= 1:  # (none: a flush of nothing failed, so there is nothing to set aside)
            for item in items:
                self._set_aside(item, exc, "write", dead)
            return True
        log.warning("%s: a batch of %d failed on its data (%s); bisecting it", self.name, len(items), exc)
        middle = len(items) // 2
        for half in (items[:middle], items[middle:]):
            try:
                if not await self._flush(half, dead, attempts=1, added=False):
                    return False
            except Exception as failure:
                if not await self._bisect(half, failure, dead):
                    return False
        return True

    async def _flush(self, items: list[_Item], dead: list[DeadLetter], attempts: int, added: bool) -> bool:
        """Flush `items` (adding them again for each try after the first, or for every try unless `added`).

        An outage is retried with backoff until the store is back; a data error `attempts` times,
        then raised. False: the loop was stopped before the flush succeeded.
        """

        def give_up(state: RetryCallState) -> bool:
            if self._stopping.is_set():
                return True
            failure = state.outcome.exception() if state.outcome is not None else None
            data = isinstance(failure, Exception) and self.sink.is_data_error(failure)
            return data and state.attempt_number >= attempts

        async def pause(seconds: float) -> None:  # wakes at once when the loop is stopped
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

        def report(state: RetryCallState) -> None:
            SINK_WRITE_FAILURES.labels(self.name).inc()
            outcome = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s: flushing %d record(s) failed (%r); retrying in %.1fs", self.name, len(items), outcome, delay
            )

        try:
            async for attempt in AsyncRetrying(
                stop=give_up,
                wait=wait_exponential(multiplier=0.2, min=0.2, max=30.0),
                sleep=pause,
                before_sleep=report,
                reraise=True,
            ):
                with attempt:
                    if not added or attempt.retry_state.attempt_number > 1:
                        items[:] = self._add(items, dead)  # the sink dropped what the failed flush held
                    await self.sink.flush()
        except Exception:
            if self._stopping.is_set():
                return False
            SINK_WRITE_FAILURES.labels(self.name).inc()
            raise
        return True

    def _commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:  # a rebalance took the partitions: their new owner rewrites, idempotently
            log.info("%s: commit skipped (%s)", self.name, exc)

    def _close(self) -> None:
        """A last synchronous commit, so an orderly stop replays nothing; then close."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            # only partitions still ours: a rebalance may have moved the others on, past what we did
            owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            done = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items() if (t, p) in owned]
            if done:
                consumer.commit(offsets=done, asynchronous=False)
        except KafkaException as exc:
            log.info("%s: the final commit failed (%s); the next run replays a little", self.name, exc)
        finally:
            consumer.close()
