"""Escalation router: time from escalation to assignment with 500 conversations waiting and 50 agents.

    PYTHONPATH=. .venv/bin/python bench/router_bench.py [--waiting 500] [--agents 50] [--probes 300] [--rate 20]

Starts an embedded tansu and the router as deployed (`python -m pipelines.services.escalation_router`, its
own process, the table on `sf.workspace.state`), and drives it from this process through Kafka
only: escalations onto `sf.escalations`, agents' commands onto `sf.workspace.commands`, and the
router's rows read back from `sf.workspace.state`. Every time is taken here, so each includes the
broker both ways and the router's commit-after-publish (one record per producer batch on tansu).

1. All agents go online: 80 % speak German, 20 % English, capacity 3 each.
2. Backlog: German escalations fill the German agents and `--waiting` more wait (the queue the
   router scans and re-scores every second); German agents resolve nothing yet.
3. Probes (the figure): `--probes` English escalations arrive at `--rate`/s while the backlog
   waits; an English agent resolves each 0.5 s after getting it, so one is free for the next.
   Measured: escalation produced -> its assignment row read back.
4. Drain: each German agent resolves one conversation, then each new one the moment they get it
   (one freed slot per agent at a time, all German agents at once), until the backlog is gone.
   Measured: a slot freed (resolve produced) -> the next waiting conversation assigned to that
   agent read back, and the backlog's drain rate.

Results go to `bench/router_results.json`. Driver, router and broker share the machine's cores.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import queue
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rich.progress import Progress

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from connectors._process import spawn, stop  # noqa: E402
from connectors.kafka import consumer_config, make_producer  # noqa: E402
from pipelines.devstack.embedded import EmbeddedBroker  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.runtime.app import ensure_topics  # noqa: E402
from pipelines.runtime.settings import Settings  # noqa: E402
from pipelines.runtime.topology import load_topology  # noqa: E402
from schemas import (  # noqa: E402
    AgentSpec,
    CustomerProfile,
    Escalation,
    HistoryTurn,
    NluResult,
    RouterCommand,
    Sentiment,
)

INTENTS = ["get_refund", "track_order", "payment_issue", "edit_account", "complaint", "delivery_period"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50_ms": pct(values_ms, 50),
        "p90_ms": pct(values_ms, 90),
        "p99_ms": pct(values_ms, 99),
        "max_ms": round(max(values_ms), 1),
    }


def make_escalation(n: int, language: str, now: datetime) -> Escalation:
    """A hand-over the size of a real one: four turns of history, a profile, NLU."""
    customer = f"{language}-c{n:05d}"
    history = [
        HistoryTurn(role="customer" if i % 2 == 0 else "agent", text=f"turn {i} of the conversation " * 4,
                    at=now - timedelta(minutes=5 - i), message_id=f"{customer}-m{i}")
        for i in range(4)
    ]  # fmt: skip
    return Escalation(
        escalation_id=f"x-{customer}",
        message_id=f"{customer}-m4",
        conversation_id=f"conv-{customer}",
        customer_id=customer,
        session_id=f"{customer}-s1",
        channel="webchat",
        recipient=f"web-{customer}",
        text="I want to talk to a person about this",
        reason="customer_requested_human",
        priority=["normal", "high", "urgent"][n % 3],  # type: ignore[arg-type]
        nlu=NluResult(
            intent=INTENTS[n % len(INTENTS)],
            confidence=0.6,
            sentiment=Sentiment(label="negative", score=-0.4),
            model_used="bench",
        ),
        sentiment_trend=[0.1, -0.2, -0.4],
        language=language,
        history=history,
        profile=CustomerProfile(
            customer_id=customer, vip_tier=["standard", "standard", "gold", "platinum"][n % 4], language=language
        ),  # type: ignore[arg-type]
        created_at=now,
    )


class StateWatcher(threading.Thread):
    """Reads `sf.workspace.state` from the beginning; each new assignment becomes an event."""

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="state-watcher")
        self.conf = conf
        self.events: queue.Queue[tuple[str, str, float, float]] = queue.Queue()
        self.status: dict[str, str] = {}
        self.holder: dict[str, str] = {}
        self.online: set[str] = set()
        self._seen: set[tuple[str, int]] = set()
        self._closed = threading.Event()

    def run(self) -> None:
        consumer = Consumer(consumer_config(self.conf, "router-bench", fetch_max_wait_ms=5))
        consumer.assign([TopicPartition("sf.workspace.state", 0, OFFSET_BEGINNING)])
        while not self._closed.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error() or msg.value() is None:
                continue
            seen_at = time.time()
            row = json.loads(msg.value())
            if row.get("agent"):
                agent = row["agent"]
                (self.online.add if agent["presence"] == "online" else self.online.discard)(agent["agent_id"])
                continue
            entry = row["entry"]
            self.status[entry["escalation_id"]] = entry["status"]
            if entry["agent_id"]:
                self.holder[entry["escalation_id"]] = entry["agent_id"]
            marker = (entry["escalation_id"], entry["assignments"])
            if entry["status"] == "assigned" and marker not in self._seen:
                self._seen.add(marker)
                assigned_at = datetime.fromisoformat(entry["assigned_at"])
                created_at = datetime.fromisoformat(entry["escalation"]["created_at"])
                router_ms = (assigned_at - created_at).total_seconds() * 1000
                self.events.put((entry["escalation_id"], entry["agent_id"], seen_at, router_ms))
        consumer.close()

    def count(self, status: str, prefix: str = "") -> int:
        return sum(1 for k, v in list(self.status.items()) if v == status and k.startswith(prefix))

    def close(self) -> None:
        self._closed.set()
        self.join(timeout=5)


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    german = int(args.agents * 0.8)
    agents = [
        AgentSpec(agent_id=f"de-{i:02d}", languages=["de"], capacity=3, password_hash="bench") for i in range(german)
    ] + [
        AgentSpec(agent_id=f"en-{i:02d}", languages=["en"], capacity=3, password_hash="bench")
        for i in range(args.agents - german)
    ]
    agents_file = workdir / "agents.yaml"
    agents_file.write_text(yaml.safe_dump({"agents": [a.model_dump() for a in agents]}))
    with EmbeddedBroker(log_file=workdir / "tansu.log") as broker:
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap, kafka_exact_offsets=True)
        ensure_topics(settings, load_topology(settings.topology_file))
        conf = settings.kafka_client_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true",
                "SUPPORTFLOW_WORKSPACE_AGENTS_FILE": str(agents_file),
                "SUPPORTFLOW_HUMAN_WAIT_TIMEOUT_S": "3600",
                "SUPPORTFLOW_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(PROJECT_DIR),
            }
        )
        ready = workdir / "router.ready"
        argv = [sys.executable, "-m", "pipelines.services.escalation_router", "--ready-file", str(ready)]
        router = spawn(argv, workdir / "router.log", env=env)
        watcher = StateWatcher(conf)
        producer = make_producer(conf, exact_offsets=True)
        try:
            wait_for(ready.exists, 60, "the router to start")
            watcher.start()
            return drive(args, agents, producer, watcher, german * 3)
        finally:
            watcher.close()
            producer.flush(10)
            stop(router, timeout_s=15)


def drive(
    args: argparse.Namespace, agents: list[AgentSpec], producer: Any, watcher: StateWatcher, held: int
) -> dict[str, Any]:
    def send_escalation(esc: Escalation) -> None:
        producer.produce("sf.escalations", key=esc.partition_key(), value=esc.to_bytes())
        producer.poll(0)

    def send_command(cmd: RouterCommand) -> None:
        producer.produce("sf.workspace.commands", key=cmd.partition_key(), value=cmd.to_bytes())
        producer.poll(0)

    commands = iter(range(10**9))

    def resolve(escalation_id: str, agent_id: str) -> None:
        send_command(RouterCommand(command_id=f"b{next(commands)}", kind="resolve", agent_id=agent_id,
                                   escalation_id=escalation_id, resolution_code="solved"))  # fmt: skip

    results: dict[str, Any] = {}
    with Progress() as progress:
        task = progress.add_task("agents online", total=len(agents))
        for spec in agents:
            send_command(RouterCommand(command_id=f"online-{spec.agent_id}", kind="presence",
                                       agent_id=spec.agent_id, presence="online"))  # fmt: skip
        producer.flush(10)
        wait_for(lambda: progress.update(task, completed=len(watcher.online)) or len(watcher.online) == len(agents),
                 30, "agents online")  # fmt: skip

        backlog = held + args.waiting
        task = progress.add_task(f"backlog: {held} held + {args.waiting} waiting", total=backlog)
        for n in range(backlog):
            send_escalation(make_escalation(n, "de", datetime.now(UTC)))
            if n % 50 == 0:
                producer.flush(10)
        producer.flush(10)
        wait_for(lambda: progress.update(task, completed=len(watcher.status)) or
                 (watcher.count("waiting") == args.waiting and watcher.count("assigned") == held),
                 120, "the backlog to settle")  # fmt: skip
        while not watcher.events.empty():
            watcher.events.get_nowait()

        task = progress.add_task(f"probes at {args.rate}/s, {args.waiting} waiting", total=args.probes)
        sent_at: dict[str, float] = {}
        probe_ms: list[float] = []
        router_ms: list[float] = []
        due: list[tuple[float, str, str]] = []
        next_probe = time.time()
        n = 0
        deadline = time.time() + args.probes / args.rate + 60
        while len(probe_ms) < args.probes and time.time() < deadline:
            now = time.time()
            if n < args.probes and now >= next_probe:
                esc = make_escalation(n, "en", datetime.now(UTC))
                sent_at[esc.escalation_id] = time.time()
                send_escalation(esc)
                producer.flush(5)
                n += 1
                next_probe += 1 / args.rate
            while due and due[0][0] <= now:
                _, escalation_id, agent_id = heapq.heappop(due)
                resolve(escalation_id, agent_id)
            producer.poll(0)
            try:
                escalation_id, agent_id, seen, inside = watcher.events.get(timeout=0.002)
            except queue.Empty:
                continue
            if escalation_id in sent_at:
                probe_ms.append((seen - sent_at[escalation_id]) * 1000)
                router_ms.append(inside)
                heapq.heappush(due, (seen + args.handle_s, escalation_id, agent_id))
                progress.update(task, completed=len(probe_ms))
        producer.flush(10)
        assert watcher.count("waiting") == args.waiting, "the backlog waited through the probes"
        results["escalation_to_assignment"] = {
            **summary(probe_ms),
            "router_assigned_at_minus_created_at": summary(router_ms),
        }

        task = progress.add_task(f"drain the {args.waiting} waiting", total=args.waiting)
        freed: dict[str, list[float]] = defaultdict(list)
        slot_ms: list[float] = []
        assigned_backlog = 0
        started = time.time()
        # every German agent resolves one conversation they hold, then each new one the moment it comes:
        # one freed slot per agent at a time, 40 agents at once
        pending = _current_holders(watcher)
        for agent_id, escalation_ids in pending.items():
            freed[agent_id].append(time.time())
            resolve(escalation_ids[0], agent_id)
        producer.flush(10)
        deadline = time.time() + 300
        while assigned_backlog < args.waiting and time.time() < deadline:
            try:
                escalation_id, agent_id, seen, _ = watcher.events.get(timeout=0.05)
            except queue.Empty:
                producer.poll(0)
                continue
            if not escalation_id.startswith("x-de-"):
                continue
            if freed[agent_id]:
                slot_ms.append((seen - freed[agent_id].pop(0)) * 1000)
            assigned_backlog += 1
            progress.update(task, completed=assigned_backlog)
            freed[agent_id].append(time.time())
            resolve(escalation_id, agent_id)
            producer.poll(0)
        drain_s = time.time() - started
        producer.flush(10)
        results["slot_to_assignment"] = summary(slot_ms)
        results["drain"] = {
            "conversations": assigned_backlog,
            "seconds": round(drain_s, 2),
            "assignments_per_s": round(assigned_backlog / drain_s, 1),
        }
    return results


def _current_holders(watcher: StateWatcher) -> dict[str, list[str]]:
    """Who holds which German conversation now, from the table's assignment events seen so far."""
    holders: dict[str, list[str]] = defaultdict(list)
    for escalation_id, agent_id in watcher.holder.items():
        if escalation_id.startswith("x-de-") and watcher.status.get(escalation_id) == "assigned":
            holders[agent_id].append(escalation_id)
    return holders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=500, help="conversations waiting in the queue")
    parser.add_argument("--agents", type=int, default=50, help="agents (80%% German, 20%% English), capacity 3")
    parser.add_argument("--probes", type=int, default=300, help="English escalations measured")
    parser.add_argument("--rate", type=float, default=20.0, help="probes per second")
    parser.add_argument("--handle-s", type=float, default=0.5, help="how long an English agent holds a probe")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "router_results.json")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]  # other work on the machine shows in the figures
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        measured = run(args, Path(tmp))
    results = {
        "benchmark": "escalation router: escalation -> assignment with a waiting backlog",
        "measured_on": {**source_state(), "command": "python bench/router_bench.py " + " ".join(sys.argv[1:])},
        "setup": {
            "agents": args.agents,
            "capacity_each": 3,
            "waiting": args.waiting,
            "probes": args.probes,
            "probe_rate_per_s": args.rate,
            "probe_handle_s": args.handle_s,
            "broker": "embedded tansu (memory), one record per producer batch",
            "router": "python -m pipelines.services.escalation_router (own process), commit after publish",
        },
        **measured,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
