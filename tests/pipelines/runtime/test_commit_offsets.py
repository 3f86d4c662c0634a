"""faust must never commit over a record that is still being processed (lanes ack out of order)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from pipelines.runtime.app import _never_commit_past_a_record_in_flight

PARTITION = TP("sf.messages", 0)


@dataclass(frozen=True)
class InFlight:
    tp: TP
    offset: int


def consumer_state(committed: int | None, acked: list[int], in_flight: list[int]) -> SimpleNamespace:
    return SimpleNamespace(
        _acked=defaultdict(list, {PARTITION: list(acked)}),
        _acked_index=defaultdict(set, {PARTITION: set(acked)}),
        _unacked_messages={InFlight(PARTITION, o) for o in in_flight} | {InFlight(TP("other", 0), 0)},
        _committed_offset=defaultdict(lambda: None, {PARTITION: committed}),
        _gap=defaultdict(IntervalTree),
    )


def test_the_record_right_after_the_committed_offset_holds_back_the_commit_while_in_flight():
    _never_commit_past_a_record_in_flight()
    new_offset = Consumer._new_offset
    # committed 31 means "31 is the next to read": 31 is still running, 32 is done
    assert new_offset._faust_original(consumer_state(31, [32], [31]), PARTITION) == 33, (  # type: ignore[attr-defined]
        "faust's own answer would commit over offset 31 and lose it if the worker died now"
    )
    assert new_offset(consumer_state(31, [32], [31]), PARTITION) is None
    assert new_offset(consumer_state(31, [31, 32], []), PARTITION) == 33, "once 31 is done both commit"


def test_before_any_commit_nothing_past_the_first_record_in_flight_is_committed():
    _never_commit_past_a_record_in_flight()
    assert Consumer._new_offset(consumer_state(None, [3, 4], [0, 1, 2]), PARTITION) is None
    assert Consumer._new_offset(consumer_state(None, [0, 1, 3], [2]), PARTITION) == 2
