"""The router service on a real broker: assignment, notices, handback, replays, and restarts mid-stream.

A router stopped (or SIGKILLed) in the middle of a stream of escalations and commands is replaced
by one that restores the table from `sf.workspace.state` and goes on: every escalation is in the
table exactly once, no escalation is ever held by two agents, and no customer notice is sent
under two ids or lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from pipelines.devstack.embedded import EmbeddedBroker, spawn, stop
from pipelines.handover import notice_reply_id
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.escalation_router import RouterService, read_state
from schemas import Escalation, Message, OutboundMessage, QueueEntry, RouterCommand, WorkspaceState, utcnow
from tests.support.handover import agent, command, escalation, online
from tests.support.stream import produce, read_topics, settings_for

AGENTS = [
    agent("ann", skills=["refund", "order"], languages=["en"], capacity=2),
    agent("bob", skills=["*"], languages=["en", "de"], capacity=2),
    agent("cem", skills=["account", "payment"], languages=["en", "fr"], capacity=1),
    agent("dia", skills=["*"], languages=["de"], capacity=3),
    agent("sup", role="supervisor", skills=["*"], languages=["*"], capacity=1),
]
CAPACITY = {a.agent_id: a.capacity for a in AGENTS}


@pytest.fixture
def settings(broker: EmbeddedBroker) -> Settings:
    made = settings_for(broker.bootstrap, human_wait_timeout_s=1.5)
    ensure_topics(made, load_topology(made.topology_file))
    return made


def send(bootstrap: str, *records: Escalation | RouterCommand) -> None:
    for record in records:
        topic = "sf.escalations" if isinstance(record, Escalation) else "sf.workspace.commands"
        produce(bootstrap, topic, [(record.partition_key(), record.to_bytes())])


async def until(condition, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def outbound(bootstrap: str, until_count: int = 0, timeout_s: float = 10.0) -> list[dict]:
    records = read_topics(bootstrap, ["sf.outbound"], until=lambda rs: len(rs) >= until_count, timeout_s=timeout_s)
    return [json.loads(r.value) for r in records if r.value]


async def test_service_assigns_tells_the_customer_hands_back_and_ignores_replays(settings: Settings):
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    service = RouterService(settings, agents=AGENTS, tick_s=0.2)
    await service.warm_up()
    halt = asyncio.Event()
    running = asyncio.create_task(service.run(halt))
    changes = service.subscribe()
    assignments_before = REGISTRY.get_sample_value("supportflow_workspace_assignment_seconds_count") or 0
    try:
        assert await service.submit_and_wait(online("ann")) == "applied"
        assert await service.submit_and_wait(online("dia")) == "applied"
        first = escalation("x1", intent="get_refund", created=utcnow())
        german = escalation("x2", intent="track_order", language="de", created=utcnow())
        waits = escalation("x3", intent="track_refund", tier="gold", created=utcnow())
        send(bootstrap, first, german)
        await until(lambda: getattr(service.entry("x2"), "status", None) == "assigned")
        send(bootstrap, escalation("x4", intent="get_refund", created=utcnow()))
        await until(lambda: service.entry("x4") is not None)
        send(bootstrap, waits)  # ann is full, dia speaks no English: it waits past the timeout
        await until(lambda: "no_human-0" in getattr(service.entry("x3"), "notices", []))
        assert (service.entry("x1").agent_id, service.entry("x2").agent_id) == ("ann", "dia")  # type: ignore[union-attr]
        assert service.position("x3") == 1 and service.expected_wait_s("x3") == 150.0  # 1 × 300 s ÷ 2 slots
        assert [e.escalation_id for e in service.visible_to("ann")] == ["x1", "x4", "x3"]

        resolve = command("resolve", "ann", escalation_id="x1", resolution_code="refunded")
        assert await service.submit_and_wait(resolve) == "applied"
        await until(lambda: service.entry("x3").agent_id == "ann")  # type: ignore[union-attr]

        # replays: the same escalation and the same command again change nothing
        table_before = [e.model_dump() for e in service.router.entries()]
        send(bootstrap, first, resolve)
        await until(lambda: service.router.outcome(resolve.command_id) == "replayed")
        await asyncio.sleep(0.5)
        assert [e.model_dump() for e in service.router.entries()] == table_before

        seen: list[WorkspaceState] = []
        while not changes.empty():
            seen.append(changes.get_nowait())
        assert {"entry:x1", "entry:x3", "agent:ann"} <= {row.key for row in seen}
    finally:
        halt.set()
        await running

    replies = outbound(bootstrap, until_count=6)
    texts = {r["reply_id"]: r["text"] for r in replies}
    assert set(texts) == {
        notice_reply_id("x1", "assigned-1"),
        notice_reply_id("x2", "assigned-1"),
        notice_reply_id("x4", "assigned-1"),
        notice_reply_id("x3", "queued"),
        notice_reply_id("x3", "no_human-0"),
        notice_reply_id("x3", "assigned-1"),
    }
    assert "expected wait is about 3 minutes" in texts[notice_reply_id("x3", "queued")]
    assert "CALLBACK" in texts[notice_reply_id("x3", "no_human-0")]
    handbacks = read_topics(bootstrap, ["sf.messages"], until=lambda rs: len(rs) >= 1, timeout_s=5)
    (handback,) = [Message.model_validate_json(r.value) for r in handbacks if r.value]
    assert (handback.control, handback.customer_id, handback.text) == ("handback", "x1", "")
    assert (REGISTRY.get_sample_value("supportflow_workspace_assignment_seconds_count") or 0) - assignments_before == 4
    assert REGISTRY.get_sample_value("supportflow_workspace_queue_depth") == 0

    # a new router reads the table back from the topic: the same queue, the same assignments
    again = RouterService(settings, agents=AGENTS)
    await again.warm_up()
    await again.close()
    assert [e.model_dump() for e in again.router.entries()] == [e.model_dump() for e in service.router.entries()]
    assert again.agent_state("ann") == service.agent_state("ann")


# ---- restart in the middle of a stream ------------------------------------------------------


def stream(count: int = 160, seed: int = 11) -> list[Escalation | RouterCommand]:
    """Escalations (some follow-ups of open conversations) mixed with presence changes, resolves,
    transfers and replies, and some records sent twice (a producer's retry)."""
    rng = random.Random(seed)
    out: list[Escalation | RouterCommand] = [online(a.agent_id) for a in AGENTS[:4]]
    escalations: list[Escalation] = []
    intents = ["get_refund", "track_order", "edit_account", "payment_issue", "complaint"]
    for i in range(count):
        roll = rng.random()
        if roll < 0.55 or len(escalations) < 3:
            earlier = rng.random() < 0.2 and escalations
            conversation = rng.choice(escalations).conversation_id if earlier else f"conv-c{i:03d}"
            made = escalation(
                f"x{i:03d}",
                conversation=conversation,
                intent=rng.choice(intents),
                tier=rng.choice(["standard", "standard", "gold", "platinum"]),
                priority=rng.choice(["normal", "high", "urgent"]),
                language=rng.choice(["en", "en", "de", "fr"]),
                created=utcnow(),
            )
            escalations.append(made)
            out.append(made)
        elif roll < 0.7:
            presence = rng.choice(["online", "online", "away", "offline"])
            out.append(command("presence", rng.choice(AGENTS[:4]).agent_id, f"p{i}", presence=presence))
        elif roll < 0.83:
            target = rng.choice(escalations).escalation_id
            out.append(command("resolve", "sup", f"r{i}", escalation_id=target, resolution_code="done"))
        elif roll < 0.9:
            target = rng.choice(escalations).escalation_id
            to = rng.choice(AGENTS[:4]).agent_id
            out.append(command("transfer", "sup", f"t{i}", escalation_id=target, to_agent=to, warm=True))
        elif roll < 0.95:
            out.append(command("human_replied", "sup", f"h{i}", escalation_id=rng.choice(escalations).escalation_id))
        else:
            out.append(rng.choice(out))  # the same record again
    return out


class Producer(threading.Thread):
    """Sends the stream at a steady pace; `halfway` is set when half of it is out."""

    def __init__(self, bootstrap: str, records: list[Escalation | RouterCommand], pause_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.records, self.pause_s = bootstrap, records, pause_s
        self.halfway = threading.Event()

    def run(self) -> None:
        for i, record in enumerate(self.records):
            send(self.bootstrap, record)
            time.sleep(self.pause_s)
            if i == len(self.records) // 2:
                self.halfway.set()


def table_entries(bootstrap: str) -> tuple[list[QueueEntry], Counter[str]]:
    """The table's entries, and how often each escalation id appears in them (follow-ups included)."""
    rows = read_state({"bootstrap.servers": bootstrap}, "sf.workspace.state")
    entries = [r.entry for r in rows if r.entry is not None]
    seen = Counter(e.escalation_id for e in entries)
    seen.update(f.escalation_id for e in entries for f in e.follow_ups)
    return entries, seen


def wait_until_settled(bootstrap: str, records: list[Escalation | RouterCommand], timeout_s: float = 60.0) -> None:
    """Until every escalation is in the table and every recorded notice was sent and confirmed."""
    wanted = {r.escalation_id for r in records if isinstance(r, Escalation)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entries, seen = table_entries(bootstrap)
        if set(seen) == wanted and all(not e.outbox for e in entries):
            return
        time.sleep(0.5)


def check_table(bootstrap: str, records: list[Escalation | RouterCommand]) -> None:
    """On a stopped router's table: every escalation once; never one with two agents; every notice once.

    The router must be stopped first: a running one keeps ticking, and a wait-timeout notice sent
    between reading the table and reading sf.outbound would look like a notice nobody recorded.
    """
    wanted = {r.escalation_id for r in records if isinstance(r, Escalation)}
    entries, seen = table_entries(bootstrap)
    assert set(seen) == wanted, f"missing {sorted(wanted - set(seen))[:5]}, unexpected {sorted(set(seen) - wanted)[:5]}"
    assert set(seen.values()) == {1}, f"in the table twice: {[k for k, v in seen.items() if v > 1][:5]}"

    history = read_topics(bootstrap, ["sf.workspace.state"], until=lambda rs: False, timeout_s=2)
    holders: dict[str, list[str]] = {}
    for record in history:  # replay the table's log: at no point does one escalation sit with two agents
        if record.value is None:
            continue
        row = WorkspaceState.model_validate_json(record.value)
        if row.agent is None:
            continue
        holders[row.agent.agent_id] = row.agent.assigned
        held = Counter(e for assigned in holders.values() for e in assigned)
        assert max(held.values(), default=1) == 1, (
            f"held by two agents at offset {record.offset}: {held.most_common(1)}"
        )
        assert len(row.agent.assigned) <= CAPACITY[row.agent.agent_id], "over capacity"
    final = {e.escalation_id: e for e in entries}
    for agent_id, assigned in holders.items():
        assert sorted(assigned) == sorted(
            k for k, e in final.items() if e.agent_id == agent_id and e.status == "assigned"
        )

    recorded = {notice_reply_id(e.escalation_id, kind) for e in entries for kind in e.notices}
    on_topic = read_topics(bootstrap, ["sf.outbound"], until=lambda rs: False, timeout_s=2)
    sent = Counter(json.loads(r.value)["reply_id"] for r in on_topic if r.value)
    assert set(sent) == recorded, "each notice recorded in the table went out, and nothing else"
    # a stopped router may not have published the row that clears its last notices: they went out all the same
    unconfirmed = {m.reply_id for e in entries for m in e.outbox if isinstance(m, OutboundMessage)}
    assert unconfirmed <= set(sent), "a notice still in an outbox was sent before the router stopped"
    texts: dict[str, set[str]] = {}
    for r in on_topic:
        data = json.loads(r.value or b"{}")
        texts.setdefault(data["reply_id"], set()).add(data["text"])
    assert all(len(t) == 1 for t in texts.values()), "a reply id sent again is the same notice"
    resolved = {e.escalation_id for e in entries if e.status == "resolved"}
    handbacks = read_topics(bootstrap, ["sf.messages"], until=lambda rs: False, timeout_s=2)
    handed = {json.loads(r.value)["message_id"] for r in handbacks if r.value}
    assert len(handed) == len(resolved), "one handback per resolved conversation"
    assert resolved and any(e.status == "assigned" for e in entries) and any(e.follow_ups for e in entries)


async def test_a_stopped_router_is_replaced_mid_stream_without_loss_or_double_assignment(settings: Settings):
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    records = stream()
    producer = Producer(bootstrap, records)
    first = RouterService(settings, agents=AGENTS, tick_s=0.2)
    await first.warm_up()
    halt = asyncio.Event()
    running = asyncio.create_task(first.run(halt))
    producer.start()
    await asyncio.get_running_loop().run_in_executor(None, producer.halfway.wait)
    halt.set()
    await running
    assert 0 < first.records_applied < len(records), "stopped mid-stream"

    second = RouterService(settings, agents=AGENTS, tick_s=0.2)
    await second.warm_up()
    halt = asyncio.Event()
    running = asyncio.create_task(second.run(halt))
    try:
        await asyncio.get_running_loop().run_in_executor(None, producer.join)
        await asyncio.get_running_loop().run_in_executor(None, wait_until_settled, bootstrap, records)
    finally:
        halt.set()
        await running
    await asyncio.get_running_loop().run_in_executor(None, check_table, bootstrap, records)


def start_router(bootstrap: str, tmp_path: Path, index: int) -> subprocess.Popen[bytes]:
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(yaml.safe_dump({"agents": [a.model_dump() for a in AGENTS]}))
    ready = tmp_path / f"router-{index}.ready"
    log_file = tmp_path / f"router-{index}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true",
            "SUPPORTFLOW_WORKSPACE_AGENTS_FILE": str(agents_file),
            "SUPPORTFLOW_HUMAN_WAIT_TIMEOUT_S": "1.5",
        }
    )
    process = spawn(
        [sys.executable, "-m", "pipelines.services.escalation_router", "--ready-file", str(ready)], log_file, env=env
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None, log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, log_file.read_text()[-3000:]
        time.sleep(0.05)
    return process


def test_a_killed_router_is_replaced_mid_stream_without_loss_or_double_assignment(
    settings: Settings, tmp_path: Path
) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    records = stream(seed=23)
    producer = Producer(bootstrap, records)
    first = start_router(bootstrap, tmp_path, 0)
    producer.start()
    producer.halfway.wait(60)
    applied = read_topics(bootstrap, ["sf.workspace.state"], until=lambda rs: len(rs) >= 20, timeout_s=20)
    assert len(applied) >= 20, "the router was working when killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    second = start_router(bootstrap, tmp_path, 1)
    try:
        producer.join(60)
        wait_until_settled(bootstrap, records)
    finally:
        stop(second, timeout_s=15)
    assert second.returncode == 0, (tmp_path / "router-1.log").read_text()[-3000:]
    check_table(bootstrap, records)
