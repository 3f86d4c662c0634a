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

Records must also *reach* the stream in order: faust drops some on the way (a fetch that a
seek overtook, see `drop_fetches_overtaken_by_a_seek`). Each record carries the seek epoch it
was fetched in; one queued before its partition's latest seek is skipped (it is read again),
and a jump past the next expected offset seeks the partition back instead of going on.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
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
        self._floor = committed
        self._next = committed
        self._epoch = max(self._epoch, epoch)
        self._rewound_to = None

    def rewound(self, epoch: int) -> None:
        """The worker seeked the partition back to `next_offset` (after `Verdict.REWIND`)."""
        self._epoch = max(self._epoch, epoch)
        self._rewound_to = self._next

    def admit(self, offset: int, epoch: int = 0) -> Verdict:
        """Take `offset` if it is the next record of the partition's current read."""
        if epoch < self._epoch or self._floor == _UNSEEKED:
            # a record read before faust seeked the partition to its committed offset may lie past
            # records never processed: processing it first would answer a later turn before an
            # earlier one (a chaos run answered a conversation's first message after its fifth)
            self._rewound_to = None  # a jump after records were skipped proves no gap in the log
            return Verdict.STALE
        self._epoch = epoch
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

    def admit(self, tp: Any, offset: int, epoch: int = 0) -> tuple[Verdict, PartitionLedger]:
        """Whether to process `offset` now; the caller marks a taken record done on the ledger returned."""
        ledger = self.partition(tp)
        return ledger.admit(offset, epoch), ledger

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
    faust_seek = _faust_seek()

    async def perform_seek(self: Any) -> None:
        assigned = list(self.assignment())
        _seek_begins(self, assigned, None)  # the committed offsets are known only once the seek is done
        await faust_perform_seek(self)
        for tp in assigned:
            _seek_ends(self, tp, self._read_offset.get(tp))  # faust sets it to the committed offset, or None
        # counted again: records of a fetch that ended during the seek may be from either position,
        # so the ledger (at this epoch) skips them and the stream reads from the committed offset
        _bump(self, assigned)
        await _reseek_overtaken(self, faust_seek)
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


class _Seeks:
    """Per partition: seeks begun (the epoch), where the latest one went, and overtaken fetches."""

    def __init__(self) -> None:
        self.epochs: dict[tuple[str, int], int] = {}
        self.targets: dict[tuple[str, int], int | object | None] = {}
        self.overtaken: dict[tuple[str, int], tuple[Any, int]] = {}  # key -> (tp, first offset dropped)


_UNKNOWN = object()  # a seek under way whose target is not known yet


def _seeks(consumer: Any) -> _Seeks:
    seeks: _Seeks | None = consumer.__dict__.get("_supportflow_seeks")
    if seeks is None:
        seeks = consumer.__dict__["_supportflow_seeks"] = _Seeks()
    return seeks


def seek_epoch(consumer: Any, tp: PartitionLike) -> int:
    """How many seeks of `tp` have begun on this consumer."""
    return _seeks(consumer).epochs.get(_epoch_key(tp), 0)


def _seek_begins(consumer: Any, tps: Iterable[PartitionLike], target: int | None) -> None:
    _bump(consumer, tps)
    targets = _seeks(consumer).targets
    for tp in tps:
        targets[_epoch_key(tp)] = _UNKNOWN if target is None else target


def _bump(consumer: Any, tps: Iterable[PartitionLike]) -> None:
    epochs = _seeks(consumer).epochs
    for tp in tps:
        key = _epoch_key(tp)
        epochs[key] = epochs.get(key, 0) + 1


def _seek_ends(consumer: Any, tp: PartitionLike, target: int | None) -> None:
    _seeks(consumer).targets[_epoch_key(tp)] = target


async def _reseek_overtaken(consumer: Any, faust_seek: Any) -> None:
    """Put each partition whose fetch a seek overtook back where that fetch began or the seek went.

    The overtaken fetch may have read from the seek's new position (and moved the consumer past
    what it read) or from the old one: the lower of its first record and the seek's target is
    never past a record the stream has not had. A target still unknown waits for its seek to end.
    """
    seeks = _seeks(consumer)
    for key, (tp, first_dropped) in list(seeks.overtaken.items()):
        target = seeks.targets.get(key)
        if target is _UNKNOWN:
            continue
        del seeks.overtaken[key]
        offset = first_dropped if target is None else min(first_dropped, target)  # type: ignore[call-overload]
        try:
            await faust_seek(consumer, tp, offset)
        except Exception:  # revoked meanwhile: the next owner reads from the committed offset, no later
            log.warning("could not seek %s back to %d after an overtaken fetch", tp, offset, exc_info=True)
            continue
        log.info("%s: a fetch was overtaken by a seek; reading again from %d", tp, offset)


async def _seek_on_the_consumer_thread(thread: Any, partition: Any, offset: int) -> None:
    thread.seek(partition, offset)


def _faust_seek() -> Any:
    from faust.transport.consumer import Consumer

    return getattr(Consumer.seek, "_faust_original", Consumer.seek)


def drop_fetches_overtaken_by_a_seek() -> None:
    """Make faust's consumer drop fetched records that a seek of their partition overtook.

    A fetch under way while a partition was seeked (a rebalance's seek to the committed offset,
    or the worker's own `Verdict.REWIND`) can return records from the old position after the
    seek; faust hands them to the stream and moves its read offset past them, and then drops the
    records the seek asked for as already read: a chaos run lost 61 messages this way with no
    worker killed (bench/chaos.py). So each partition counts the seeks begun (its epoch); a fetch
    during which the epoch changed is dropped for that partition and the partition is seeked
    again to where nothing can be missed (`_reseek_overtaken`); and every record handed on
    carries the epoch it was fetched in (`message.fetch_epoch`), so the stream can tell a record
    queued before a seek from one read after it.
    """
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer

    if getattr(Consumer.seek, "_faust_original", None) is not None:
        return
    faust_seek = Consumer.seek
    faust_wait_next_records = Consumer._wait_next_records
    faust_getmany = Consumer.getmany

    async def seek(self: Any, partition: Any, offset: int) -> None:
        _seek_begins(self, [partition], offset)
        await faust_seek(self, partition, offset)

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        seeks = _seeks(self)
        before = dict(seeks.epochs)
        records, active_partitions = await faust_wait_next_records(self, timeout)
        if records:
            overtaken = [tp for tp in records if seeks.epochs.get(_epoch_key(tp), 0) != before.get(_epoch_key(tp), 0)]
            for tp in overtaken:
                batch = records.pop(tp)
                if batch:
                    key = _epoch_key(tp)
                    first = min(batch[0].offset, seeks.overtaken.get(key, (tp, batch[0].offset))[1])
                    seeks.overtaken[key] = (tp, first)
            if overtaken:
                await _reseek_overtaken(self, faust_seek)
        self._supportflow_fetch_epochs = before
        return records, active_partitions

    async def getmany(self: Any, timeout: float) -> Any:
        epochs = _seeks(self).epochs
        async for tp, message in faust_getmany(self, timeout):
            key = _epoch_key(tp)
            fetched_in = self.__dict__.get("_supportflow_fetch_epochs", {}).get(key, 0)
            if epochs.get(key, 0) != fetched_in:
                continue  # seeked while this batch was handed on: the seek's position is the truth
            message.fetch_epoch = fetched_in
            yield tp, message

    faust_drain_messages = Consumer._drain_messages

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        if not isinstance(self._read_offset, ReadOffsets):
            self._read_offset = ReadOffsets(self, self._read_offset)
        await faust_drain_messages(self, fetcher)

    async def _seek_on_its_thread(self: Any, partition: Any, offset: int) -> None:
        # faust calls aiokafka's seek from the event loop's thread while aiokafka runs on its own:
        # the wake-up of its fetcher could be lost and the partition read no more (a chaos run
        # stalled that way). Queued on the consumer's thread, it also comes before any later fetch.
        await self._thread.call_thread(_seek_on_the_consumer_thread, self._thread, partition, offset)

    seek._faust_original = faust_seek  # type: ignore[attr-defined]
    Consumer.seek = seek  # type: ignore[method-assign]
    ThreadDelegateConsumer._seek = _seek_on_its_thread  # type: ignore[method-assign]
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
