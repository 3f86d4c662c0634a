"""The one batch consumer loop: consume a batch, hand each record to a sink, flush, then commit.

Every process outside the faust workers that turns a topic into effects runs this loop: the
store sinks (PostgreSQL, ClickHouse), the channel senders and the escalation router. The sink
contract is Quix Streams' (`add` each record, `flush` the batch): the loop decodes records by
their topic's type, dead-letters what does not parse (or what `add` refuses with a ValueError),
and commits a batch's offsets only after `flush` returned. A crash between flush and commit
replays the batch, so sinks are idempotent by record id. A failing flush is retried with
backoff until it succeeds or the loop is stopped; it is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, RetryError, wait_exponential

from connectors.kafka import AsyncProducer, consumer_config, dead_letter_of
from pipelines.runtime.metrics import SINK_BATCH_SECONDS, SINK_RECORDS, SINK_WRITE_FAILURES
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from schemas import DeadLetter, Record, record_types

log = logging.getLogger(__name__)

__all__ = ["BatchSink", "ConsumerLoop", "TopicWriterSink", "Writer"]

Writer = Callable[[str, Sequence[Record]], Awaitable[int]]
"""Writes one topic's records of a batch (idempotently) and returns how many it wrote."""


class BatchSink(Protocol):
    """Where a consumer loop's records go: `add` each record of a batch, then `flush` the batch.

    `add` may raise ValueError for a record the sink can never take: the loop dead-letters it.
    `flush` raising means "not done": the loop retries it with backoff and commits nothing meanwhile.
    """

    def add(self, topic: str, record: Record) -> None: ...

    async def flush(self) -> None: ...


class TopicWriterSink:
    """A sink that writes each topic's share of the batch with one `write` call (stores, senders).

    A topic written is dropped from the buffer, so a retried flush resumes with the topics left.
    """

    def __init__(self, name: str, write: Writer) -> None:
        self.name = name
        self.write = write
        self._by_topic: dict[str, list[Record]] = {}
        self.records_written = 0

    def add(self, topic: str, record: Record) -> None:
        self._by_topic.setdefault(topic, []).append(record)

    async def flush(self) -> None:
        for topic in list(self._by_topic):
            records = self._by_topic[topic]
            started = time.perf_counter()
            await self.write(topic, records)
            SINK_BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            SINK_RECORDS.labels(self.name, topic).inc(len(records))
            self.records_written += len(records)
            del self._by_topic[topic]


class ConsumerLoop:
    """One consumer over `topics` feeding `sink`, until `stop()`.

        `group_member=True` subscribes in a consumer group (sinks, senders: replicas share the
        partitions); False assigns every partition to this one process and resumes at the committed
        offsets (the router: one instance, no join to wait for). `fill_batches`: wait up to
        `wait_s` for a full batch (throughput); otherwise hand over whatever arrived as soon as the
        first record does (latency). `tick` runs once per cycle, batch or not (timers). With
    `retry_flush=False` a failing flush ends `run` with its exception (a process that restores its
    state on restart, like the router, is better restarted than retried).
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
                    offsets, dead = self._hand_over(messages)
                    if not await self._flush_until_done():
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

    def _hand_over(self, messages: list[KafkaMessage]) -> tuple[dict[tuple[str, int], int], list[DeadLetter]]:
        offsets: dict[tuple[str, int], int] = {}
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
                self.sink.add(topic, self.record_type[topic].model_validate_json(value))
            except (ValidationError, ValueError) as exc:
                dead.append(dead_letter_of(message, self.dead_letter_stage, exc))
                continue
            self.records_consumed += 1
        return offsets, dead

    async def _flush_until_done(self) -> bool:
        if not self.retry_flush:
            await self.sink.flush()
            return True

        def stopped(_state: RetryCallState) -> bool:
            return self._stopping.is_set()

        async def pause(seconds: float) -> None:  # wakes at once when the loop is stopped
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

        def report(state: RetryCallState) -> None:
            SINK_WRITE_FAILURES.labels(self.name).inc()
            outcome = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning("%s: flushing a batch failed (%s); retrying in %.1fs", self.name, outcome, delay)

        try:
            async for attempt in AsyncRetrying(
                stop=stopped, wait=wait_exponential(multiplier=0.2, min=0.2, max=30.0), sleep=pause, before_sleep=report
            ):
                with attempt:
                    await self.sink.flush()  # the store is down or refused: retry, never skip
        except RetryError:
            return False
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
