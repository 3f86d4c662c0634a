"""The worker commits only finished records: never past one in flight, failed, cancelled or revoked."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from pipelines.runtime.app import _job
from pipelines.runtime.offsets import OffsetLedger, commit_from_ledger

PARTITION = TP("sf.ingress", 0)


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
    partitions = [ledger.take(PARTITION, offset) for offset in (31, 32, 33)]
    partitions[1].done(32)
    partitions[2].done(33)
    assert ledger.position(PARTITION) == 31, "31 is still running: a worker killed now must read it again"
    partitions[0].done(31)
    assert ledger.position(PARTITION) == 34


def test_records_read_before_the_seek_to_the_committed_offset_commit_nothing():
    # found by bench/chaos.py (a run lost 668 messages: the ingest group committed offset 260 of a
    # partition whose records from 78 on were never taken): after a rebalance the stream handed
    # over records read from the old position before faust seeked the partition to the committed
    # offset, and their position was committed over the records in between
    commit_from_ledger()
    ledger = OffsetLedger(["sf.ingress"])
    for offset in (250, 251):
        ledger.take(PARTITION, offset).done(offset)
    assert Consumer._new_offset(faust_consumer(None, [], ledger), PARTITION) is None, "not seeked yet"
    ledger.seeked(PARTITION, 78)
    assert ledger.position(PARTITION) == 78
    ledger.take(PARTITION, 252).done(252)  # one more from the old position, already fetched
    assert ledger.position(PARTITION) == 78
    ledger.take(PARTITION, 78).done(78)  # the stream reads from the committed offset
    assert ledger.position(PARTITION) == 79, "79..249 have not been read since the seek"


def test_records_the_stream_skipped_hold_the_position_until_they_are_read():
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, 10)
    ledger.take(PARTITION, 10).done(10)
    ledger.take(PARTITION, 15).done(15)  # 11..14 never reached this worker
    assert ledger.position(PARTITION) == 11
    ledger.take(PARTITION, 11).done(11)  # a seek back reads them
    assert ledger.position(PARTITION) == 12


def test_a_partition_never_committed_starts_where_the_stream_starts():
    ledger = OffsetLedger(["sf.ingress"])
    ledger.seeked(PARTITION, None)
    assert ledger.position(PARTITION) is None
    ledger.take(PARTITION, 0).done(0)
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
    ledger.take(PARTITION, 24).done(24)
    ledger.take(PARTITION, 26)
    ledger.take(PARTITION, 27).done(27)
    # 25 never reached the worker, 26 is in flight: the ledger commits neither
    assert Consumer._new_offset(faust_consumer(24, [27], ledger), PARTITION) == 25


def test_faust_commits_acks_left_from_a_revoked_assignment_with_no_floor():
    # a revoke forgets the committed offset; acks that arrive afterwards (a job that outlived the
    # revoke) are committed as they are when the partition comes back, whatever the broker holds
    commit_from_ledger()
    faust_new_offset = Consumer._new_offset._faust_original  # type: ignore[attr-defined]
    assert faust_new_offset(faust_consumer(committed=None, acked=[40, 41]), PARTITION) == 42

    ledger = OffsetLedger(["sf.ingress"])
    stale = ledger.take(PARTITION, 41)
    ledger.revoke([PARTITION])  # the partition goes, and comes back at the broker's committed offset 30
    stale.done(41)
    ledger.seeked(PARTITION, 30)
    ledger.take(PARTITION, 30)
    assert Consumer._new_offset(faust_consumer(None, [41], ledger), PARTITION) == 30


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
        ledger.take(PARTITION, offset),
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
