"""The streamed reply's sink on a real tansu broker: pieces coalesced into numbered `ReplyChunk`s on
`sf.reply.stream`, keyed by customer, a restart dropping what waited, and never an error for the turn."""

from __future__ import annotations

import asyncio
import json

from connectors.kafka import AsyncProducer, KafkaRecord
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.reply_stream import ChunkSink, ReplyStreams, reply_streams_for
from pipelines.runtime.topology import load_topology
from schemas import ReplyChunk
from tests.support.operators import message
from tests.support.stream import read_topics, settings_for

TOPIC = "sf.reply.stream"


def chunks_on_topic(bootstrap: str, count: int) -> tuple[list[KafkaRecord], list[ReplyChunk]]:
    records = read_topics(bootstrap, [TOPIC], until=lambda rs: len(rs) >= count, timeout_s=20)
    return records, [ReplyChunk.model_validate_json(r.value) for r in records]


def streams_on(bootstrap: str, **options: float) -> tuple[AsyncProducer, ReplyStreams]:
    settings = settings_for(bootstrap)
    ensure_topics(settings, load_topology(settings.topology_file))
    producer = AsyncProducer(settings.kafka_client_config(), **{"linger.ms": 5, "acks": 1})
    return producer, ReplyStreams(producer.send_nowait, TOPIC, **options)  # type: ignore[arg-type]


async def test_pieces_are_coalesced_numbered_and_keyed_by_customer(broker):
    producer, streams = streams_on(broker.bootstrap, flush_ms=50, max_chars=12)
    try:
        sink = streams.sink_for(message("how do refunds work?", message_id="m-7"))
        assert isinstance(sink, ChunkSink)
        for piece in ["Ref", "unds ", "take ", "five", " days", "."]:  # 12 characters wait: sent at once
            await sink.token(piece)
        await sink.token("")  # nothing to send
        await asyncio.sleep(0.2)  # "five days." waited 50 ms: sent by the timer
    finally:
        producer.close()

    records, chunks = chunks_on_topic(broker.bootstrap, 2)
    assert [(c.seq, c.kind, c.text) for c in chunks] == [(0, "token", "Refunds take "), (1, "token", "five days.")]
    assert {(c.reply_to, c.customer_id, c.channel, c.recipient) for c in chunks} == {("m-7", "c1", "webchat", "web-1")}
    assert len({c.stream for c in chunks}) == 1
    assert {r.key for r in records} == {b"c1"} and len({r.partition for r in records}) == 1, "one customer, in order"


async def test_a_restart_drops_what_waited_and_the_numbers_go_on(broker):
    producer, streams = streams_on(broker.bootstrap, flush_ms=30, max_chars=4)
    try:
        sink = streams.sink_for(message(message_id="m-8"))
        assert sink is not None
        await sink.token("abcd")  # sent: 4 characters
        await sink.token("ef")  # waits...
        await sink.restart()  # ...and is void: the tier failed mid-reply
        await sink.token("xyz")
        await asyncio.sleep(0.15)
    finally:
        producer.close()

    _, chunks = chunks_on_topic(broker.bootstrap, 3)
    assert [(c.seq, c.kind, c.text) for c in chunks] == [(0, "token", "abcd"), (1, "restart", ""), (2, "token", "xyz")]
    assert json.loads(chunks[1].to_bytes())["kind"] == "restart"


async def test_a_long_piece_is_cut_to_chunks_the_schema_takes():
    sent: list[ReplyChunk] = []
    sink = ChunkSink(
        lambda topic, key, value: sent.append(ReplyChunk.model_validate_json(value)) is None,
        TOPIC,
        reply_to="m-9",
        customer_id="c1",
        channel="webchat",
        recipient="web-1",
        max_chars=64,
    )
    await sink.token("x" * 9000)  # a cached reply comes whole
    assert [len(c.text) for c in sent] == [4000, 4000, 1000] and [c.seq for c in sent] == [0, 1, 2]


async def test_a_send_that_fails_or_refuses_never_reaches_the_turn():
    def broken(topic: str, key: str | None, value: bytes) -> bool:
        raise RuntimeError("the producer is gone")

    for send in (broken, lambda topic, key, value: False):
        sink = ChunkSink(send, TOPIC, reply_to="m", customer_id="c1", channel="webchat", recipient="web-1", max_chars=1)
        await sink.token("a")
        await sink.restart()
        assert sink.seq == 2


def test_only_web_chat_messages_are_streamed_and_nothing_without_streams():
    streams = ReplyStreams(lambda topic, key, value: True, TOPIC)
    clients = RuntimeClients(reply_streams=streams)
    assert clients.reply_stream(message(channel="webchat")) is not None
    assert clients.reply_stream(message(channel="sms")) is None, "no gateway streams to an SMS"
    assert RuntimeClients().reply_stream(message()) is None, "no LLM or no topic: the reply comes whole"


def test_a_worker_without_a_language_model_streams_nothing(broker):
    settings = settings_for(broker.bootstrap)
    assert not settings.llm_tiers
    assert reply_streams_for(settings, load_topology(settings.topology_file)) is None


def test_closed_streams_send_nothing():
    sent: list[bytes] = []
    closed: list[bool] = []
    streams = ReplyStreams(
        lambda t, k, v: sent.append(v) is None, TOPIC, max_chars=1, on_close=lambda: closed.append(True)
    )
    streams.close()
    streams.close()
    assert closed == [True], "the producer is closed once"
    sink = streams.sink_for(message())
    assert sink is not None
    asyncio.run(sink.token("late"))
    assert sent == []
