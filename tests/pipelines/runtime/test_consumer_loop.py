"""The consumer loop's failure path: bisect a batch that fails on its data, dead-letter the record
that fails alone, retry an outage without dead-lettering anything.

Real tansu broker and the real ConsumerLoop; the sink is a real BatchSink kept in memory that
refuses, on flush, any batch holding a record whose text carries a NUL (as PostgreSQL does), and
can be made to be "away" (connection refused) for a number of flushes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import TopicPlan, create_topics
from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.runtime.consumer_loop import ConsumerLoop
from pipelines.runtime.topology import load_topology
from schemas import Message, Record, utcnow
from tests.support.stream import DEFAULT_TOPOLOGY, produce, read_topics, settings_for

TOPOLOGY = load_topology(DEFAULT_TOPOLOGY)
GROUP = "loop-test"


class Refused(Exception):
    """The store refusing the values of a batch (like PostgreSQL's SQLSTATE class 22)."""


class PickyStore:
    """A BatchSink that keeps messages by id; a batch holding a NUL in a text is refused whole."""

    def __init__(self, away_for: int = 0, away_after: int | None = None, refuse_on_add: str | None = None) -> None:
        self.away_for = away_for  # the next `away_for` flushes (after `away_after` flushes, if given) are refused
        self.away_after = away_after
        self.refuse_on_add = refuse_on_add
        self.held: list[Message] = []
        self.stored: dict[str, Message] = {}
        self.flushes = 0
        self.away_flushes = 0

    def add(self, topic: str, record: Record) -> None:
        assert isinstance(record, Message)
        if record.message_id == self.refuse_on_add:
            raise KeyError(f"no place for {record.message_id}")
        self.held.append(record)

    async def flush(self) -> None:
        batch, self.held = self.held, []
        self.flushes += 1
        if self.away_for and (self.away_after is None or self.flushes > self.away_after):
            self.away_for -= 1
            self.away_flushes += 1
            raise ConnectionRefusedError("connection refused: the store is away")
        bad = [m.message_id for m in batch if "\x00" in m.text]
        if bad:
            raise Refused(f'invalid byte sequence for encoding "UTF8": 0x00 (in one of {len(batch)} records)')
        self.stored.update((m.message_id, m) for m in batch)

    def is_data_error(self, exc: Exception) -> bool:
        return isinstance(exc, Refused)


def message(n: int, text: str = "where is my order?") -> Message:
    return Message(
        message_id=f"m-{n}",
        conversation_id=f"conv-{n % 7}",
        customer_id=f"C{n % 7}",
        channel="webchat",
        sender=f"w-{n % 7}",
        text=text,
        received_at=utcnow(),
    )


def put(broker: EmbeddedBroker, messages: list[Message]) -> None:
    create_topics({"bootstrap.servers": broker.bootstrap}, [TopicPlan("sf.messages", 2), TopicPlan("sf.dlq", 1)])
    produce(broker.bootstrap, "sf.messages", [(m.partition_key(), m.to_bytes()) for m in messages])


def committed(broker: EmbeddedBroker) -> int:
    """Records the loop's group has committed past, over every partition of sf.messages."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": GROUP})
    try:
        offsets = consumer.committed([TopicPartition("sf.messages", p) for p in range(2)], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


async def run_until(loop: ConsumerLoop, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    task = asyncio.create_task(loop.run())
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            assert not task.done(), f"the loop ended: {task.exception() if not task.cancelled() else 'cancelled'}"
            assert time.monotonic() < deadline, "the loop did not finish the records in time"
            await asyncio.sleep(0.05)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)


def consumer_loop(broker: EmbeddedBroker, sink: Any) -> ConsumerLoop:
    return ConsumerLoop(
        "picky",
        settings_for(broker.bootstrap),
        TOPOLOGY,
        ["sf.messages"],
        sink,
        GROUP,
        group_member=False,  # assigned: no group join to wait for
        batch_size=500,
        wait_s=0.5,
    )


def dead_letters(broker: EmbeddedBroker, at_least: int) -> list[dict[str, Any]]:
    """The dead letters; the loop sends them before it commits, so after the commit they are all there."""
    records = read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: len(rs) >= at_least, timeout_s=2)
    return [json.loads(r.value) for r in records]


async def test_records_that_fail_alone_are_dead_lettered_with_their_place_and_the_rest_of_the_batch_is_written(
    broker,
):
    good = [message(n) for n in range(40)]
    bad = [message(100, "a\x00b"), message(101, "\x00")]
    batch = [*good[:10], bad[0], *good[10:30], bad[1], *good[30:]]
    put(broker, batch)
    sink = PickyStore()
    loop = consumer_loop(broker, sink)
    await run_until(loop, lambda: committed(broker) == len(batch))

    assert set(sink.stored) == {m.message_id for m in good}, "every good record is written"
    letters = dead_letters(broker, 2)
    assert sorted(json.loads(letter["original"])["message_id"] for letter in letters) == ["m-100", "m-101"]
    for letter in letters:
        assert (letter["stage"], letter["operator"], letter["error_type"]) == ("sink:picky", "write", "Refused")
        assert "0x00" in letter["error"]
        assert letter["source_topic"] == "sf.messages"
        assert letter["partition"] in (0, 1) and letter["offset"] is not None
    # bisected, not written one record at a time: a few flushes per bad record, not one per record
    assert sink.flushes < 30, sink.flushes


async def test_an_outage_is_retried_until_the_store_is_back_and_dead_letters_nothing(broker):
    batch = [message(n) for n in range(20)]
    put(broker, batch)
    sink = PickyStore(away_for=4)
    loop = consumer_loop(broker, sink)
    await run_until(loop, lambda: committed(broker) == len(batch))

    assert sink.away_flushes == 4, "the store was away for four flushes, past the loop's three data attempts"
    assert set(sink.stored) == {m.message_id for m in batch}
    assert dead_letters(broker, 1) == [], "an outage dead-letters nothing"
    assert not sink.held


async def test_an_outage_in_the_middle_of_a_bisection_dead_letters_only_the_record_at_fault(broker):
    good = [message(n) for n in range(16)]
    bad = message(100, "x\x00")
    batch = [*good[:8], bad, *good[8:]]
    put(broker, batch)
    # three failed tries of the whole batch, then the store goes away for four flushes of the halves
    sink = PickyStore(away_for=4, away_after=4)
    loop = consumer_loop(broker, sink)
    await run_until(loop, lambda: committed(broker) == len(batch))

    assert sink.away_flushes == 4
    assert set(sink.stored) == {m.message_id for m in good}
    [letter] = dead_letters(broker, 1)
    assert json.loads(letter["original"])["message_id"] == "m-100" and letter["error_type"] == "Refused"


async def test_a_record_the_sink_cannot_take_is_dead_lettered_whatever_it_raises_and_the_loop_goes_on(broker):
    batch = [message(n) for n in range(5)]
    put(broker, batch)
    sink = PickyStore(refuse_on_add="m-2")
    loop = consumer_loop(broker, sink)
    await run_until(loop, lambda: committed(broker) == len(batch))

    assert set(sink.stored) == {"m-0", "m-1", "m-3", "m-4"}
    [letter] = dead_letters(broker, 1)
    assert (letter["operator"], letter["error_type"]) == ("add", "KeyError")
    assert json.loads(letter["original"])["message_id"] == "m-2"
