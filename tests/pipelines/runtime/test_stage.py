"""StageProcessor on its own: outputs before state, dead letters with reasons, timeouts.

Most tests give the stage a `send` that records what would go to Kafka (the Kafka path itself is
covered end to end against a real broker); the rejected-output test uses a real producer and broker.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from connectors.inbound_body import BodyRefused
from operators.base import Operator
from operators.protocols import DictTable, OperatorContext
from pipelines.runtime.stage import StageProcessor, decode_record
from pipelines.runtime.topology import load_topology
from schemas import RawInbound
from tests.support.hostile import HOSTILE


class HangOnHang(Operator[RawInbound, RawInbound]):
    """Never answers for the text 'hang': stands in for a stuck backend call."""

    name = "hang_on_hang"
    input_type = RawInbound
    output_type = RawInbound

    async def run(self, record: RawInbound, ctx: OperatorContext) -> RawInbound:
        if record.text == "hang":
            await asyncio.sleep(3600)
        return record


TOPOLOGY = """
version: 1
topics:
  sf.ingress:  {partitions: 1, record: RawInbound}
  sf.messages: {partitions: 1, record: Message}
  sf.outbound: {partitions: 1, record: OutboundMessage}
  sf.escalations: {partitions: 1, record: Escalation}
  sf.events:   {partitions: 1, record: ConversationEvent}
  sf.dlq:      {partitions: 1, record: DeadLetter}
tables:
  identities: {}
  seen: {}
  sessions: {record: SessionContext}
stages:
  ingest:
    source: sf.ingress
    tables: [identities, seen]
    operator_timeout_s: 0.2
    operators:
      - tests.pipelines.runtime.test_stage:HangOnHang
      - normalize
"""


class Sent(list):
    async def __call__(self, topic: str, key: str | None, value: bytes) -> None:
        self.append((topic, key, json.loads(value)))


def processor(tmp_path: Path) -> tuple[StageProcessor, Sent, dict[str, DictTable]]:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    topology = load_topology(path)
    stage = topology.stages["ingest"]
    sent = Sent()
    tables = {"identities": DictTable(), "seen": DictTable()}
    return StageProcessor(stage, RawInbound, topology.topic_for, "sf.dlq", tables, sent), sent, tables


def raw(text: str) -> bytes:
    # as the SMS webhook publishes it: the signed request vouches for the number, so it may bind a customer
    return RawInbound(message_id="m-1", channel="sms", sender="+1555", text=text, address_verified=True).to_bytes()


async def test_outputs_are_sent_and_then_state_is_written(tmp_path):
    stage, sent, tables = processor(tmp_path)
    assert await stage.process(raw("hello"), b"sms:+1555", "sf.ingress", 0, 7) == "emitted"
    [(topic, key, message)] = sent
    assert topic == "sf.messages" and key == message["customer_id"]
    assert tables["identities"]["sms:+1555"] == message["customer_id"]


async def test_a_hung_operator_is_dead_lettered_after_the_stage_timeout(tmp_path):
    stage, sent, tables = processor(tmp_path)
    outcome = await asyncio.wait_for(stage.process(raw("hang"), b"k", "sf.ingress", 0, 8), 5)
    assert outcome == "dead_lettered"
    [(topic, _, letter)] = sent
    assert topic == "sf.dlq" and letter["operator"] == "hang_on_hang"
    assert letter["error_type"] == "TimeoutError" and "no result within 0.2s" in letter["error"]
    assert not tables["identities"], "a failed record writes no state"


async def test_undecodable_record_is_dead_lettered_at_decode(tmp_path):
    stage, sent, _ = processor(tmp_path)
    assert await stage.process(b"\xff{", None, "sf.ingress", 0, 9) == "dead_lettered"
    [(_, _, letter)] = sent
    assert letter["operator"] == "decode" and letter["offset"] == 9


async def test_an_output_the_cluster_will_never_take_is_dead_lettered_not_retried_forever(broker, tmp_path):
    from connectors.kafka import AsyncProducer, TopicPlan, create_topics
    from tests.support.stream import read_topics

    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, [TopicPlan("sf.messages", 1), TopicPlan("sf.dlq", 1)])
    stage, _, tables = processor(tmp_path)
    producer = AsyncProducer(conf, **{"message.max.bytes": 1500})  # a small limit stands in for the broker's
    stage.send = producer.send
    try:
        outcome = await asyncio.wait_for(stage.process(raw("x" * 1400), b"k", "sf.ingress", 0, 11), 30)
    finally:
        producer.close()
    assert outcome == "dead_lettered"
    [letter] = [json.loads(r.value) for r in read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: bool(rs))]
    assert letter["operator"] == "deliver" and "too large" in letter["error"].lower()
    assert "stays at sf.ingress/0@11" in letter["error"], (
        "the letter itself was too large: it says where the original is"
    )
    assert not tables["identities"], "a rejected record writes no state"


def test_a_raw_record_is_read_by_the_ingress_parser_so_every_hostile_body_is_refused_with_its_reason():
    """sf.ingress is a boundary an outside Kafka client can write to: what the HTTP ingress refuses, the
    worker refuses too (pydantic's own parser would keep the last of two keys and read NaN)."""

    def wrap(text: bytes) -> bytes:
        return b'{"message_id": "m1", "channel": "sms", "sender": "+1", "text": "hi", "payload": {"n": ' + text + b"}}"

    for hostile in HOSTILE:
        try:
            decode_record(RawInbound, hostile.body(wrap))
        except BodyRefused as exc:
            assert hostile.says in exc.message, (hostile.name, exc.message)
        else:
            raise AssertionError(f"{hostile.name} was decoded")
    good = decode_record(RawInbound, wrap(b'"a\\tb"'))
    assert isinstance(good, RawInbound) and good.payload == {"n": "a\tb"}
