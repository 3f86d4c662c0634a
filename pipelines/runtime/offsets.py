"""The worker's own offset bookkeeping: commit only what is finished, per partition.

faust's `Consumer` decides what to commit from the offsets streams ack, and three things in it
can put a committed offset past a record that was never finished (see the README, "Delivery:
how nothing is lost"): a record acked in a `finally` when its processing was cancelled at shutdown,
acked offsets that outlive a revoke and come back with the partition, and gap filling that
counts the fetched record itself as done. So the worker keeps its own ledger, the way Kafka
Streams and Quix Streams checkpoint: each partition's records are *taken* in offset order as
the stream hands them over and marked *done* only when their outputs and state are delivered
(or dead-lettered). The offset to commit is the lowest record still in flight, or one past the
last record taken when none is. A record that fails or is cancelled is never done, so its
offset holds back the partition's commits until the next owner processes it again.

A revoke drops the partition's ledger; a job that finishes later marks an orphaned ledger. A
partition (re)assigned processes and commits nothing until faust has seeked it to the broker's
committed offset, so records its stream hands over from the old position are read again, in order.

Records must also *reach* the stream in order: faust hands on records fetched before a seek
and drops some fetched after it (see `track_seek_epochs`). Each record carries the seek epoch
it was fetched in; one older than its partition's latest seek is skipped (it is read again),
and a jump past the next expected offset seeks the partition back instead of going on.

A committed offset also promises that the record's *state* is durable: the table writes a record
makes go to faust's changelog buffer, which faust flushes before each commit, but its flush gives
up as soon as no message leaves the buffer for 0.1 s (see `drain_changelogs_before_commit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PartitionLike(Protocol):
    topic: str
    partition: int


_UNSEEKED = -1


class Verdict(enum.Enum):
    """What the worker does with a record the stream hands over."""

    TAKE = "take"  # process it
    STALE = "stale"  # fetched before its partition's latest seek: it is read again from there
    REWIND = "rewind"  # records before it never reached the stream: seek back to the first of them


class PartitionLedger:
    """In-flight and finished records of one partition for one assignment.

    Nothing is taken or committed until faust has seeked the partition to the broker's committed
    offset (records read before that seek may lie past it). From there records are taken in offset
    order only: a record past the next expected offset means records in between were dropped
    on the way to the stream, so the worker seeks back to the first of them rather than go on
    (`Verdict.REWIND`). If the first record read after that seek jumps the same way, the log has
    no records there (compaction, transaction markers) and it is taken.
    """

    __slots__ = ("_epoch", "_floor", "_in_flight", "_next", "_rewound_to", "name")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._in_flight: set[int] = set()
        self._next: int | None = None
        self._floor: int | None = _UNSEEKED
        self._epoch = 0
        self._rewound_to: int | None = None

    @property
    def next_offset(self) -> int | None:
        return self._next

    def seeked(self, committed: int | None, epoch: int = 0) -> None:
        """faust seeked the partition to `committed` (None: nothing committed, read from the start)."""
        if epoch and epoch <= self._epoch and self._floor != _UNSEEKED:
            return  # a record fetched after this seek told the ledger first (`admit`)
        self._floor = committed
        self._next = committed
        self._epoch = max(self._epoch, epoch)
        self._rewound_to = None

    def rewound(self, epoch: int) -> None:
        """The worker seeked the partition back to `next_offset` (after `Verdict.REWIND`)."""
        self._epoch = max(self._epoch, epoch)
        self._rewound_to = self._next

    def admit(self, offset: int, epoch: int = 0, sought: int | None = None) -> Verdict:
        """Take `offset` if it is the next record of the partition's current read.

        `epoch` is the seek epoch the record was fetched in and `sought` where that seek went: the
        first record fetched after a seek can arrive before faust tells the ledger of the seek.
        """
        if epoch > self._epoch:
            self._epoch = epoch
            self._floor = self._next = sought
            self._rewound_to = None
        elif epoch < self._epoch or self._floor == _UNSEEKED:
            # a record read before faust seeked the partition to its committed offset may lie past
            # records never processed: processing it first would answer a later turn before an
            # earlier one (a chaos run answered a conversation's first message after its fifth)
            self._rewound_to = None  # a jump after records were skipped proves no gap in the log
            return Verdict.STALE
        if self._next is not None and offset > self._next:
            if self._rewound_to != self._next:
                log.warning("%s: %d..%d never reached the stream; reading again", self.name, self._next, offset - 1)
                return Verdict.REWIND
            log.info("%s: %d..%d are not in the log; going on from %d", self.name, self._next, offset - 1, offset)
        self.take(offset)
        return Verdict.TAKE

    def take(self, offset: int) -> None:
        self._rewound_to = None
        self._in_flight.add(offset)
        self._next = offset + 1  # after a seek back, the records read again are not done yet

    def done(self, offset: int) -> None:
        self._in_flight.discard(offset)

    def position(self) -> int | None:
        """The offset to commit (the next one to read), or None while there is none yet."""
        if self._floor == _UNSEEKED or self._next is None:
            return None
        return min(self._next, min(self._in_flight)) if self._in_flight else self._next


class OffsetLedger:
    """The ledgers of every partition a worker's stages read, keyed by faust's `TP`."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self._partitions: dict[Any, PartitionLedger] = {}

    def owns(self, tp: PartitionLike) -> bool:
        return tp.topic in self.topics

    def partition(self, tp: Any) -> PartitionLedger:
        ledger = self._partitions.get(tp)
        if ledger is None:
            ledger = self._partitions[tp] = PartitionLedger(f"{tp.topic}/{tp.partition}")
        return ledger

    def admit(self, tp: Any, offset: int, epoch: int = 0, sought: int | None = None) -> tuple[Verdict, PartitionLedger]:
        """Whether to process `offset` now; the caller marks a taken record done on the ledger returned."""
        ledger = self.partition(tp)
        return ledger.admit(offset, epoch, sought), ledger

    def position(self, tp: Any) -> int | None:
        ledger = self._partitions.get(tp)
        return None if ledger is None else ledger.position()

    def seeked(self, tp: Any, committed: int | None, epoch: int = 0) -> None:
        self.partition(tp).seeked(committed, epoch)

    def partitions(self) -> list[Any]:
        return list(self._partitions)

    def revoke(self, tps: Iterable[Any]) -> None:
        for tp in tps:
            self._partitions.pop(tp, None)


def commit_from_ledger() -> None:
    """Make faust's consumer commit, for the topics a ledger owns, the ledger's positions.

    faust keeps committing (its timer, its flush of changelogs and attached messages before a
    commit, its final commit at shutdown and on revoke); only the choice of offset is replaced.
    Topics without a ledger (an app with none) keep faust's own choice.
    """
    from faust.transport.consumer import Consumer

    if getattr(Consumer._new_offset, "_supportflow_ledger", False):
        return
    faust_new_offset = Consumer._new_offset
    faust_pending = Consumer._filter_tps_with_pending_acks

    def _new_offset(self: Any, tp: Any) -> int | None:
        ledger: OffsetLedger | None = getattr(self.app, "offset_ledger", None)
        if ledger is None or not ledger.owns(tp):
            return faust_new_offset(self, tp)
        # faust's own lists would only grow: the ledger is the record of what is done
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        self._gap.pop(tp, None)
        return ledger.position(tp)

    def _filter_tps_with_pending_acks(self: Any, topics: Any = None) -> Any:
        ledger: OffsetLedger | None = getattr(self.app, "offset_ledger", None)
        if ledger is None:
            yield from faust_pending(self, topics)
            return
        for tp in ledger.partitions():
            if topics is None or tp in topics or tp.topic in topics:
                yield tp
        for tp in list(faust_pending(self, topics)):
            if not ledger.owns(tp):
                yield tp

    faust_perform_seek = Consumer.perform_seek

    async def perform_seek(self: Any) -> None:
        await faust_perform_seek(self)  # the seek epochs move on the consumer's thread, with the positions
        ledger: OffsetLedger | None = getattr(self.app, "offset_ledger", None)
        if ledger is None:
            return
        for tp in self.assignment():
            if ledger.owns(tp):
                committed = self._committed_offset.get(tp)  # faust sets it from the broker in the seek
                ledger.seeked(tp, committed if committed is not None and committed >= 0 else None, seek_epoch(self, tp))

    _new_offset._supportflow_ledger = True  # type: ignore[attr-defined]
    _new_offset._faust_original = faust_new_offset  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._filter_tps_with_pending_acks = _filter_tps_with_pending_acks  # type: ignore[method-assign]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def _epoch_key(tp: PartitionLike) -> tuple[str, int]:
    return (tp.topic, tp.partition)  # faust's TP and aiokafka's TopicPartition alike


def _epochs(consumer: Any) -> dict[tuple[str, int], int]:
    epochs: dict[tuple[str, int], int] = consumer.__dict__.setdefault("_supportflow_epochs", {})
    return epochs


def seek_epoch(consumer: Any, tp: PartitionLike) -> int:
    """How many times `tp` has been seeked on this consumer."""
    return _epochs(consumer).get(_epoch_key(tp), 0)


def sought_offset(consumer: Any, tp: PartitionLike, epoch: int) -> int | None:
    """Where the seek that began `epoch` of `tp` went."""
    targets: dict[tuple[str, int, int], int] = consumer.__dict__.get("_supportflow_targets", {})
    return targets.get((tp.topic, tp.partition, epoch))


def _bump(consumer: Any, sought: Mapping[Any, int]) -> None:
    """Count a seek of each partition to its offset (called on aiokafka's thread, with the seek)."""
    epochs = _epochs(consumer)
    targets: dict[tuple[str, int, int], int] = consumer.__dict__.setdefault("_supportflow_targets", {})
    for tp, offset in sought.items():
        key = _epoch_key(tp)
        epoch = epochs[key] = epochs.get(key, 0) + 1
        targets[(key[0], key[1], epoch)] = offset


class _EpochedRecords(dict[Any, Any]):
    """A fetch's records, with each partition's seek epoch at the moment the fetch returned."""

    epochs: Mapping[tuple[str, int], int]


_NO_EPOCHS: Mapping[tuple[str, int], int] = MappingProxyType({})
_FETCHED_IN: ContextVar[Mapping[tuple[str, int], int]] = ContextVar("supportflow_fetched_in", default=_NO_EPOCHS)


async def _seek_on_the_consumer_thread(thread: Any, partition: Any, offset: int) -> None:
    thread.seek(partition, offset)
    _bump(thread.consumer, {partition: offset})


def track_seek_epochs() -> None:
    """Stamp every record faust fetches with its partition's seek epoch, counted where aiokafka runs.

    A fetch that returns before a seek of its partition holds records from the old position, one
    that returns after holds records from the new one (aiokafka discards what no longer matches
    its position). faust cannot tell them apart on its event loop, hands both on, and then drops
    the records the seek asked for as already read: a chaos run lost 61 messages this way with no
    worker killed, another 329 (bench/chaos.py). So the seeks are counted on aiokafka's own thread,
    in the same step as the position moves (aiokafka's `seek` and `seek_to_committed`, which faust
    also called from the wrong thread for `seek`: a run stalled that way), and every fetch carries
    the counts as they were when it returned. Each record handed on gets its partition's
    (`message.fetch_epoch`); the ledger skips a record older than the partition's latest seek, to
    be read again from the seek's position.
    """
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(ThreadDelegateConsumer._seek, "_supportflow", False):
        return
    faust_fetch_records = AIOKafkaConsumerThread._fetch_records
    faust_wait_next_records = Consumer._wait_next_records
    faust_getmany = Consumer.getmany
    faust_drain_messages = Consumer._drain_messages

    async def _seek(self: Any, partition: Any, offset: int) -> None:
        await self._thread.call_thread(_seek_on_the_consumer_thread, self._thread, partition, offset)

    async def seek_to_committed(self: Any) -> Mapping[Any, int]:
        aiokafka_consumer = self._ensure_consumer()
        ledger: OffsetLedger | None = getattr(self.consumer.app, "offset_ledger", None)

        async def on_the_thread() -> Mapping[Any, int]:
            # aiokafka's own seek_to_committed, except that each partition's epoch moves in the same
            # step as its position: a fetch returning while the other partitions' commits are asked
            # for already reads from the new position, and must not count as older than the seek
            committed: dict[Any, int | None] = {}
            for tp in aiokafka_consumer.assignment():
                offset = committed[tp] = await aiokafka_consumer.committed(tp)
                if ledger is not None and ledger.owns(tp):
                    target = offset if offset and offset > 0 else 0  # no commit yet: from the start
                    aiokafka_consumer.seek(tp, target)
                    _bump(self.consumer, {tp: target})
                elif offset and offset > 0:
                    aiokafka_consumer.seek(tp, offset)
            return committed

        return await self.call_thread(on_the_thread)

    async def _fetch_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        records = _EpochedRecords(await faust_fetch_records(self, *args, **kwargs))
        records.epochs = dict(_epochs(self.consumer))
        return records

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        records, active_partitions = await faust_wait_next_records(self, timeout)
        _FETCHED_IN.set(getattr(records, "epochs", _NO_EPOCHS))  # read by `getmany`, in this same task
        return records, active_partitions

    async def getmany(self: Any, timeout: float) -> Any:
        async for tp, message in faust_getmany(self, timeout):
            message.fetch_epoch = _FETCHED_IN.get().get(_epoch_key(tp), 0)
            yield tp, message

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        if not isinstance(self._read_offset, ReadOffsets):
            self._read_offset = ReadOffsets(self, self._read_offset)
        await faust_drain_messages(self, fetcher)

    _seek._supportflow = True  # type: ignore[attr-defined]
    ThreadDelegateConsumer._seek = _seek  # type: ignore[method-assign]
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = _fetch_records  # type: ignore[method-assign]
    Consumer._wait_next_records = _wait_next_records  # type: ignore[method-assign]
    Consumer.getmany = getmany  # type: ignore[method-assign]
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]


class ReadOffsets(dict[Any, int | None]):
    """faust's read offsets, except that its drain never sees one for a topic a ledger owns.

    The drain drops a fetched record below the partition's read offset as already read. But the
    read offset is also moved by records of a batch fetched before a seek and handed on after
    it, so the records the seek asked for were dropped (a chaos run lost 329 messages this
    way, after the seek back of `Verdict.REWIND`). For a ledger's topics the ledger decides
    instead: by the seek epoch each record carries, and by offset order.
    """

    def __init__(self, consumer: Any, initial: Mapping[Any, int | None]) -> None:
        super().__init__(initial)
        self._consumer = consumer

    def __missing__(self, tp: Any) -> None:
        return None

    def __getitem__(self, tp: Any) -> int | None:
        ledger: OffsetLedger | None = getattr(self._consumer.app, "offset_ledger", None)
        if ledger is not None and ledger.owns(tp):
            return None
        return super().__getitem__(tp)


def drain_changelogs_before_commit() -> None:
    """Make faust's flush before a commit wait until every buffered table write has left the buffer.

    faust's `ProducerBuffer.flush` returns when no message leaves the buffer within 0.1 s, and the
    commit goes ahead. On a loaded broker that happens with writes still queued: the offset past a
    record is committed while its session write is not yet sent, and a worker killed or paused then
    loses the write for good. The next owner starts after that record with the session as it was
    before it — in the chaos runs, a conversation handed to a human whose next message the AI
    answered anyway, while the old owner had escalated it (two answers to one message). Here the
    flush waits, re-checking every second, until the buffer is empty and no message is on its way
    into the producer; the producer's own flush, which faust calls next, waits for the broker.
    """
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer.flush, "_supportflow_drains", False):
        return
    faust_send_pending = ProducerBuffer._send_pending
    faust_flush = ProducerBuffer.flush

    async def _send_pending(self: Any, fut: Any) -> None:
        # the message the buffer's task took from the queue is no longer counted in `size`
        self._supportflow_sending = getattr(self, "_supportflow_sending", 0) + 1
        try:
            await faust_send_pending(self, fut)
        finally:
            self._supportflow_sending -= 1

    async def flush(self: Any) -> None:
        while self.size or getattr(self, "_supportflow_sending", 0):
            if self.state != "running":
                raise RuntimeError(f"Cannot flush: Producer not Running ({self.state})")
            self.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)

    flush._supportflow_drains = True  # type: ignore[attr-defined]
    flush._faust_original = faust_flush  # type: ignore[attr-defined]
    ProducerBuffer._send_pending = _send_pending
    ProducerBuffer.flush = flush
