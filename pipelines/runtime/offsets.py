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
partition (re)assigned commits nothing until faust has seeked it to the broker's committed
offset, so records its stream hands over from the old position never count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PartitionLike(Protocol):
    topic: str
    partition: int


_UNSEEKED = -1


class PartitionLedger:
    """In-flight and finished records of one partition for one assignment.

    Nothing is committed until faust has seeked the partition to the broker's committed offset
    (records read before that seek may lie past it). From there the position never passes an
    offset this assignment did not take: a jump forward holds the position at the first
    skipped offset until the stream reads it, and a seek back rewinds the position.
    """

    __slots__ = ("_floor", "_hole", "_in_flight", "_next")

    def __init__(self) -> None:
        self._in_flight: set[int] = set()
        self._next: int | None = None
        self._hole: int | None = None
        self._floor: int | None = _UNSEEKED

    def seeked(self, committed: int | None) -> None:
        """faust seeked the partition to `committed` (None: nothing committed, read from the start)."""
        self._floor = committed
        self._next = committed
        self._hole = None

    def take(self, offset: int) -> None:
        if self._hole is not None and offset <= self._hole:
            self._hole = None  # the stream reads the skipped records now
        if self._next is not None and offset > self._next:
            log.warning("offsets %d..%d not read in order; not committing past %d", self._next, offset - 1, self._next)
            self._hole = self._next if self._hole is None else min(self._hole, self._next)
        self._in_flight.add(offset)
        self._next = offset + 1  # after a seek back, the records read again are not done yet

    def done(self, offset: int) -> None:
        self._in_flight.discard(offset)

    def position(self) -> int | None:
        """The offset to commit (the next one to read), or None while there is none yet."""
        if self._floor == _UNSEEKED or self._next is None:
            return None
        candidates = [self._next]
        if self._in_flight:
            candidates.append(min(self._in_flight))
        if self._hole is not None:
            candidates.append(self._hole)
        return min(candidates)


class OffsetLedger:
    """The ledgers of every partition a worker's stages read, keyed by faust's `TP`."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self._partitions: dict[Any, PartitionLedger] = {}

    def owns(self, tp: PartitionLike) -> bool:
        return tp.topic in self.topics

    def take(self, tp: Any, offset: int) -> PartitionLedger:
        """Record that `offset` is now being processed; the caller marks it done on the ledger returned."""
        ledger = self._partitions.get(tp)
        if ledger is None:
            ledger = self._partitions[tp] = PartitionLedger()
        ledger.take(offset)
        return ledger

    def position(self, tp: Any) -> int | None:
        ledger = self._partitions.get(tp)
        return None if ledger is None else ledger.position()

    def seeked(self, tp: Any, committed: int | None) -> None:
        ledger = self._partitions.get(tp)
        if ledger is None:
            ledger = self._partitions[tp] = PartitionLedger()
        ledger.seeked(committed)

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
        await faust_perform_seek(self)
        ledger: OffsetLedger | None = getattr(self.app, "offset_ledger", None)
        if ledger is None:
            return
        for tp in self.assignment():
            if ledger.owns(tp):
                committed = self._committed_offset.get(tp)  # faust sets it from the broker in the seek
                ledger.seeked(tp, committed if committed is not None and committed >= 0 else None)

    _new_offset._supportflow_ledger = True  # type: ignore[attr-defined]
    _new_offset._faust_original = faust_new_offset  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._filter_tps_with_pending_acks = _filter_tps_with_pending_acks  # type: ignore[method-assign]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
