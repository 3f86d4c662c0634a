"""The platform floor's operator and topology (`bench/floor/topology.yaml`), which `supportflow bench` runs."""

from __future__ import annotations

from pathlib import Path

from operators.format import reply_id_for
from operators.nlu_model import NluModel
from pipelines.evaluation.floor import FixedReply
from pipelines.runtime.topology import load_topology
from schemas import ContextTurn, OutboundMessage, SessionContext
from tests.support.operators import context, message, session

ROOT = Path(__file__).resolve().parents[3]
FLOOR, FLOOR_NLU = ROOT / "bench" / "floor" / "topology.yaml", ROOT / "bench" / "floor" / "topology_nlu.yaml"


async def test_the_floor_replies_to_every_turn_with_its_text_and_records_the_turn_in_the_session():
    ctx = context()
    turn = ContextTurn(message=message("where is my parcel?", message_id="m-7", channel="sms"), session=session())
    emitted = await FixedReply().run(turn, ctx)
    [reply] = emitted.records
    assert isinstance(reply, OutboundMessage)
    assert (reply.reply_id, reply.in_reply_to, reply.channel) == (reply_id_for("m-7"), "m-7", "sms")
    assert reply.text == "Thanks, we have your message."
    stored = ctx.table("sessions").get("c1")
    assert isinstance(stored, SessionContext)
    assert [(h.role, h.message_id) for h in stored.history] == [("agent", "m-7")]


def test_the_floor_topology_keeps_the_default_topics_and_replaces_only_the_agents_middle():
    default = load_topology(ROOT / "topology.yaml")
    for file, agent in ((FLOOR, ["enrich_context"]), (FLOOR_NLU, ["enrich_context", "nlu_model"])):
        floor = load_topology(file)
        assert floor.spec.topics == default.spec.topics, "the same topics and partitions as the default's"
        assert set(floor.stages) == {"ingest", "agent"}
        assert [node.operator.name for node in floor.stages["agent"].root.walk()] == [*agent, "fixed_reply"]
    nlu, default_nlu = load_topology(FLOOR_NLU).operator(NluModel), default.operator(NluModel)
    assert nlu is not None and default_nlu is not None
    assert nlu.config == default_nlu.config, "the model served as the default topology serves it"
