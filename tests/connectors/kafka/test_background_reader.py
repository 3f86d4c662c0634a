"""The reader the ingress and the workspace follow reply topics with, against a real tansu broker."""

from __future__ import annotations

import asyncio

from connectors.kafka import BackgroundReader, KafkaRecord, TopicPlan, create_topics
from tests.support.stream import produce


def test_records_reach_the_loop_in_order_and_a_failing_callback_stops_no_other(broker):
    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, [TopicPlan("sf.outbound", 1, 1)])
    seen: list[bytes] = []

    async def scenario() -> None:
        all_read = asyncio.Event()

        def on_record(record: KafkaRecord) -> None:
            assert asyncio.get_running_loop() is loop, "callbacks run on the loop, not the reader's thread"
            seen.append(record.value or b"")
            if record.value == b"3":
                raise ValueError("a record the callback cannot take")
            if len(seen) == 300:
                all_read.set()

        loop = asyncio.get_running_loop()
        reader = BackgroundReader(conf, ["sf.outbound"], on_record)  # assigned at the topic's end, no group
        reader.start(loop)
        try:
            produce(broker.bootstrap, "sf.outbound", ((f"k{i}", str(i).encode()) for i in range(300)))
            await asyncio.wait_for(all_read.wait(), timeout=30)
        finally:
            reader.close()

    asyncio.run(scenario())

    assert seen == [str(i).encode() for i in range(300)]
