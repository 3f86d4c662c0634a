"""The worker commits only finished records: never past one in flight, failed, cancelled or revoked."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from pipelines.runtime.app import _job
from pipelines.runtime.offsets import (
    OffsetLedger,
    PartitionLedger,
    ReadOffsets,
    Verdict,
    commit_from_ledger,
    drain_changelogs_before_commit,
    seek_epoch,
    track_seek_epochs,
)

PARTITION = TP("sf.ingress", 0)


def take(ledger: OffsetLedger, offset: int, epoch: int = 0) -> PartitionLedger:
    verdict, partition = ledger.admit(PARTITION, offset, epoch)
    assert verdict is Verdict.TAKE, f"{offset} was not taken: {verdict}"
    return partition


def faust_consumer(committed: int | None, acked: list[int], ledger: OffsetLedger | None = None) -> SimpleNamespace:
    """The part of faust's Consumer state its offset choice reads."""
    return SimpleNamespace(
        app=SimpleNamespace(offset_ledger=ledger),
        _acked=defaultdict(list, {PARTITION: list(acked)}),
        _acked_index=defaultdict(set, {PARTITION: set(acked)}),
        _committed_offset=defaultdict(lambda: None, {PARTITION: committed}),
        _gap=defaultdict(IntervalTree),
    )


def test_a_record_in_flight_holds_back_the_commit_of_every_later_offset():
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 31)
    partitions = [take(ledger, offset) for offset in (31, 32, 33)]
    partitions[1].done(32)
    partitions[2].done(33)
    assert ledger.position(PARTITION) == 31, "31 is still running: a worker killed now must read it again"
    partitions[0].done(31)
    assert ledger.position(PARTITION) == 34


def test_records_read_before_the_seek_to_the_committed_offset_are_read_again_not_processed():
    # found by bench/chaos.py: a run lost 668 messages (the ingest group committed offset 260 of a
    # partition whose records from 78 on were never taken) when records read from the old position
    # before faust seeked to the committed offset were committed over the records in between; and
    # a run answered a conversation's first message after its fifth when they were processed
    commit_from_ledger()
    ledger = OffsetLedger(["sf.ingress"])
    assert ledger.admit(PARTITION, 250, epoch=0)[0] is Verdict.STALE, "not seeked yet"
    assert Consumer._new_offset(faust_consumer(None, [], ledger), PARTITION) is None
    ledger.seeked(PARTITION, 78, epoch=2)
    assert ledger.position(PARTITION) == 78
    verdict, _ = ledger.admit(PARTITION, 252, epoch=0)  # one more from the old position, already queued
    assert verdict is Verdict.STALE
    take(ledger, 78, epoch=2).done(78)  # the stream reads from the committed offset
    assert ledger.position(PARTITION) == 79, "79..249 have not been read since the seek"


def test_a_record_past_the_next_offset_seeks_back_instead_of_being_processed():
    # found by bench/chaos.py (61 messages never answered, no worker killed): records dropped on
    # their way to the stream, and the worker went on with later ones
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 10, epoch=2)
    take(ledger, 10, epoch=2).done(10)
    verdict, partition = ledger.admit(PARTITION, 15, epoch=2)  # 11..14 never reached the stream
    assert verdict is Verdict.REWIND and partition.next_offset == 11
    assert ledger.position(PARTITION) == 11
    partition.rewound(epoch=4)  # the worker seeked back to 11
    assert ledger.admit(PARTITION, 16, epoch=2)[0] is Verdict.STALE, "queued before the seek back"
    take(ledger, 11, epoch=4).done(11)
    assert ledger.position(PARTITION) == 12


def test_a_jump_that_persists_after_seeking_back_is_a_gap_in_the_log():
    # transaction markers and compaction leave offsets without records: going on is right there
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 10, epoch=2)
    verdict, partition = ledger.admit(PARTITION, 12, epoch=2)
    assert verdict is Verdict.REWIND
    partition.rewound(epoch=4)
    take(ledger, 12, epoch=4).done(12)
    assert ledger.position(PARTITION) == 13
    assert ledger.admit(PARTITION, 20, epoch=4)[0] is Verdict.REWIND, "a new jump is checked again"


def test_a_jump_after_records_were_skipped_as_stale_is_read_again_not_taken_as_a_gap():
    # skipped records may have moved the consumer past fresh ones: only a clean jump proves a gap
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 10, epoch=2)
    verdict, partition = ledger.admit(PARTITION, 12, epoch=2)
    assert verdict is Verdict.REWIND
    partition.rewound(epoch=4)
    assert ledger.admit(PARTITION, 13, epoch=3)[0] is Verdict.STALE
    assert ledger.admit(PARTITION, 14, epoch=4)[0] is Verdict.REWIND


def test_a_partition_never_committed_starts_where_the_stream_starts():
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, None)
    assert ledger.position(PARTITION) is None
    take(ledger, 0).done(0)
    assert ledger.position(PARTITION) == 1


def test_faust_fills_a_fetch_gap_with_the_fetched_record_itself_and_commits_past_it():
    # evidence for the README: faust's own bookkeeping, run as it is
    commit_from_ledger()
    faust_new_offset = Consumer._new_offset._faust_original  # type: ignore[attr-defined]
    consumer = faust_consumer(committed=24, acked=[])
    # read offset 24, then the fetch returns 26: faust adds the "gap" 25..26, the fetched record included
    asyncio.run(Consumer._add_gap(consumer, PARTITION, 25, 26))
    consumer._acked[PARTITION].append(27)  # 27 finishes first, 26 is still being processed
    assert faust_new_offset(consumer, PARTITION) == 28, "faust commits over record 26, still in flight"

    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 24)
    take(ledger, 24).done(24)
    assert ledger.admit(PARTITION, 26)[0] is Verdict.REWIND
    # 25 never reached the worker: the ledger reads it again rather than commit past it
    assert Consumer._new_offset(faust_consumer(24, [27], ledger), PARTITION) == 25


def test_faust_commits_acks_left_from_a_revoked_assignment_with_no_floor():
    # a revoke forgets the committed offset; acks that arrive afterwards (a job that outlived the
    # revoke) are committed as they are when the partition comes back, whatever the broker holds
    commit_from_ledger()
    faust_new_offset = Consumer._new_offset._faust_original  # type: ignore[attr-defined]
    assert faust_new_offset(faust_consumer(committed=None, acked=[40, 41]), PARTITION) == 42

    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 41)
    stale = take(ledger, 41)
    ledger.revoke([PARTITION])  # the partition goes, and comes back at the broker's committed offset 30
    stale.done(41)
    ledger.seeked(PARTITION, 30)
    take(ledger, 30)
    assert Consumer._new_offset(faust_consumer(None, [41], ledger), PARTITION) == 30


class _AiokafkaThread:
    """faust's consumer thread as its fetch and seek use it, over a fetcher that returns `offsets`."""

    def __init__(self, offsets: list[int]) -> None:
        self.consumer = SimpleNamespace(flow_active=True)
        self.aiokafka = SimpleNamespace(
            _closed=False,
            _fetcher=SimpleNamespace(
                _closed=False,
                _subscriptions=SimpleNamespace(fetch_context=contextlib.nullcontext),
                fetched_records=self.fetched_records,
            ),
        )
        self.offsets = offsets
        self.positions: list[int] = []

    async def fetched_records(self, *_: Any, **__: Any) -> dict[Any, list[Any]]:
        return {PARTITION: [SimpleNamespace(offset=offset) for offset in self.offsets]}

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)

    def seek(self, partition: Any, offset: int) -> None:
        self.positions.append(offset)


def test_a_fetch_carries_the_seek_epochs_of_the_moment_it_returned():
    # faust handed on records fetched before a seek and dropped those the seek asked for as already
    # read (chaos runs lost 61 and 329): the epoch, counted on aiokafka's thread, tells them apart
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    track_seek_epochs()
    thread = _AiokafkaThread([9, 10])
    before = asyncio.run(AIOKafkaConsumerThread._fetch_records(thread, thread.aiokafka, {PARTITION}))  # type: ignore[arg-type]
    consumer = SimpleNamespace(_thread=thread)
    asyncio.run(ThreadDelegateConsumer._seek(consumer, PARTITION, 5))  # type: ignore[arg-type]
    thread.offsets = [5, 6]
    after = asyncio.run(AIOKafkaConsumerThread._fetch_records(thread, thread.aiokafka, {PARTITION}))  # type: ignore[arg-type]
    assert thread.positions == [5], "the seek ran on the thread that runs aiokafka"
    assert before.epochs == {} and seek_epoch(thread.consumer, PARTITION) == 1
    assert after.epochs == {("sf.ingress", 0): 1}
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 5, epoch=1)
    assert ledger.admit(PARTITION, 9, before.epochs.get(("sf.ingress", 0), 0))[0] is Verdict.STALE
    assert ledger.admit(PARTITION, 5, after.epochs[("sf.ingress", 0)])[0] is Verdict.TAKE


def test_faust_never_drops_a_record_of_a_ledger_topic_as_already_read():
    # a chaos run lost 329 messages: a batch fetched before the worker's seek back moved faust's
    # read offset past the offsets the seek asked for, and faust dropped them as already read
    consumer = SimpleNamespace(app=SimpleNamespace(offset_ledger=OffsetLedger(["sf.ingress"])))
    read = ReadOffsets(consumer, {PARTITION: 300, TP("supportflow-sessions-changelog", 0): 12})
    read[PARTITION] = 301  # the drain still writes; it never reads for a ledger's topic
    assert read[PARTITION] is None and read.get(PARTITION) == 301
    assert read[TP("supportflow-sessions-changelog", 0)] == 12, "other topics keep faust's behaviour"
    assert read[TP("sf.other", 0)] is None


def test_topics_without_a_ledger_keep_fausts_choice():
    commit_from_ledger()
    consumer = faust_consumer(committed=10, acked=[10, 11], ledger=OffsetLedger(["sf.messages"]))
    assert Consumer._new_offset(consumer, PARTITION) == 12


class _Processor:
    def __init__(self, outcome: BaseException | None = None) -> None:
        self.outcome = outcome
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def process(self, *_: Any) -> str:
        self.started.set()
        await self.release.wait()
        if self.outcome is not None:
            raise self.outcome
        return "emitted"


def _record_job(processor: _Processor, ledger: OffsetLedger, offset: int) -> tuple[Any, SimpleNamespace]:
    calls = SimpleNamespace(acked=[], crashed=[])

    async def ack(event: Any) -> None:
        calls.acked.append(event.message.offset)

    async def crash(exc: BaseException) -> None:
        calls.crashed.append(exc)

    message = SimpleNamespace(value=b"{}", key=b"k", topic="sf.ingress", partition=0, offset=offset, tp=PARTITION)
    ledger.seeked(PARTITION, offset)
    job = _job(
        SimpleNamespace(crash=crash),  # type: ignore[arg-type]
        SimpleNamespace(ack=ack),  # type: ignore[arg-type]
        SimpleNamespace(message=message),  # type: ignore[arg-type]
        processor,  # type: ignore[arg-type]
        take(ledger, offset),
    )
    return job, calls


def test_a_record_cancelled_at_shutdown_is_neither_acked_nor_committed():
    async def scenario() -> tuple[int | None, SimpleNamespace]:
        ledger = OffsetLedger(["sf.ingress"])
        processor = _Processor()
        job, calls = _record_job(processor, ledger, 7)
        task = asyncio.create_task(job())
        await processor.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ledger.position(PARTITION), calls

    position, calls = asyncio.run(scenario())
    assert position == 7 and calls.acked == []


def test_a_record_failing_outside_its_stage_stops_the_worker_uncommitted():
    async def scenario() -> tuple[int | None, SimpleNamespace]:
        ledger = OffsetLedger(["sf.ingress"])
        processor = _Processor(RuntimeError("the producer is closed"))
        job, calls = _record_job(processor, ledger, 7)
        processor.release.set()
        await job()
        return ledger.position(PARTITION), calls

    position, calls = asyncio.run(scenario())
    assert position == 7 and calls.acked == []
    assert [str(e) for e in calls.crashed] == ["the producer is closed"]


def test_a_finished_record_is_acked_and_committed():
    async def scenario() -> tuple[int | None, SimpleNamespace]:
        ledger = OffsetLedger(["sf.ingress"])
        processor = _Processor()
        job, calls = _record_job(processor, ledger, 7)
        processor.release.set()
        await job()
        return ledger.position(PARTITION), calls

    position, calls = asyncio.run(scenario())
    assert position == 8 and calls.acked == [7] and calls.crashed == []


class SlowChannel:
    """A changelog topic on a loaded broker: each message takes longer to hand over than faust waits."""

    def __init__(self) -> None:
        self.published: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.25)
        self.published.append(fut.n)


async def _flushed_with(flush: Any) -> tuple[int, int]:
    from faust.transport.producer import ProducerBuffer

    channel = SlowChannel()
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    try:
        for n in range(4):
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))
        await flush(buffer)
        return len(channel.published), buffer.size
    finally:
        await ProducerBuffer.flush(buffer)  # stopping a buffer that still holds messages raises
        await buffer.stop()


async def test_the_flush_before_a_commit_waits_for_every_buffered_table_write_on_a_slow_broker():
    """faust's flush gave up after 0.1 s with writes still queued, and the commit went on without them."""
    from faust.transport.producer import ProducerBuffer

    drain_changelogs_before_commit()
    faust_flush = ProducerBuffer.flush._faust_original  # type: ignore[attr-defined]
    published, left = await _flushed_with(faust_flush)
    assert published < 4 and left > 0, "faust's own flush returned before the buffer was empty"
    assert await _flushed_with(ProducerBuffer.flush) == (4, 0)
