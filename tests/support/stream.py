"""Helpers for tests that drive real brokers and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from connectors.kafka import KafkaRecord, consume_all, make_producer, make_reader
from pipelines.devstack.embedded import spawn, stop
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import PROJECT_DIR, Settings
from pipelines.runtime.topology import load_topology

DEFAULT_TOPOLOGY = PROJECT_DIR / "topology.yaml"


def missing(what: str) -> NoReturn:
    """A part of the machine a test needs is not there: skip on a developer's machine, fail in CI,
    which installs every part (a CI run that skipped a real part would pass without testing it)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI installs this, yet it is missing: {what}")
    pytest.skip(what)


def settings_for(bootstrap: str, topology: Path = DEFAULT_TOPOLOGY, **extra: Any) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, kafka_exact_offsets=True, topology_file=topology, **extra)


class WorkerPool:
    """Starts `supportflow worker` processes against a broker and waits until they process."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def ensure_topics(self, topology: Path = DEFAULT_TOPOLOGY) -> None:
        ensure_topics(settings_for(self.bootstrap, topology), load_topology(topology))

    def start(
        self, topology: Path = DEFAULT_TOPOLOGY, wait: bool = True, stages: tuple[str, ...] = (), **env: str
    ) -> subprocess.Popen[bytes]:
        """A `supportflow worker` process running `stages` of `topology` (default: every stage)."""
        self.ensure_topics(topology)
        command = ["worker", *(arg for stage in stages for arg in ("--stage", stage))]
        return self._spawn("worker", command, topology, wait, env)

    def start_sink(self, *targets: str, group: str, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        """A `supportflow sink` process (its stores from `env`: DATABASE_URL, CLICKHOUSE_URL, data dir)."""
        self.ensure_topics()
        command = ["sink", "--migrate", "--group", group, *(arg for target in targets for arg in ("--to", target))]
        return self._spawn("sink", command, DEFAULT_TOPOLOGY, wait, env)

    def _spawn(
        self, name: str, command: list[str], topology: Path, wait: bool, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        index = self.count
        self.count += 1
        ready = self.tmp_path / f"{name}-{index}.ready"
        log_file = self.tmp_path / f"{name}-{index}.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
        child_env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true",
                "SUPPORTFLOW_TOPOLOGY_FILE": str(topology),
                **env,
            }
        )
        argv = [sys.executable, "-m", "pipelines.cli", *command, "--ready-file", str(ready)]
        process = spawn(argv, log_file, env=child_env)
        self.processes.append(process)
        deadline = time.monotonic() + 90
        while wait and not ready.exists():
            assert process.poll() is None, f"{name} exited with {process.returncode}:\n{log_file.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{name} not ready:\n{log_file.read_text()[-3000:]}"
            time.sleep(0.1)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        stop(process, timeout_s=30)

    def stop_all(self) -> None:
        for process in self.processes:
            stop(process, timeout_s=15)


def raw_message(
    message_id: str,
    channel: str,
    sender: str,
    text: str,
    customer_id: str | None = None,
    *,
    address_verified: bool = False,
) -> dict[str, Any]:
    """A record as a channel publishes it to sf.ingress; `address_verified` as a signed webhook sets it."""
    body: dict[str, Any] = {"message_id": message_id, "channel": channel, "sender": sender, "text": text}
    if customer_id is not None:
        body["customer_id"] = customer_id
    if address_verified:
        body["address_verified"] = True
    return body


def produce(bootstrap: str, topic: str, records: Iterable[tuple[str | None, bytes]], pause_s: float = 0.0) -> None:
    producer = make_producer({"bootstrap.servers": bootstrap}, exact_offsets=True)
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(f"{message.key()!r}: {error}")

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
        if pause_s:
            time.sleep(pause_s)
    assert producer.flush(30) == 0, "records left unsent"
    assert not failures, f"the broker refused records: {failures[:5]}"


def produce_messages(bootstrap: str, messages: Iterable[dict[str, Any]], pause_s: float = 0.0) -> None:
    produce(
        bootstrap,
        "sf.ingress",
        ((f"{m['channel']}:{m['sender']}", json.dumps(m).encode()) for m in messages),
        pause_s,
    )


def read_topics(
    bootstrap: str,
    topics: list[str],
    until: Callable[[list[KafkaRecord]], bool],
    timeout_s: float = 60.0,
) -> list[KafkaRecord]:
    """Read from the beginning until `until(records)` holds or the timeout passes."""
    consumer = make_reader({"bootstrap.servers": bootstrap}, topics, from_beginning=True)
    records: list[KafkaRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(records):
            records.extend(consume_all(consumer, idle_s=0.5, max_s=1.0))
        # a short grace period catches duplicates that would arrive just after the condition holds
        records.extend(consume_all(consumer, idle_s=1.0, max_s=3.0))
    finally:
        consumer.close()
    return records


def answered_ids(records: list[KafkaRecord]) -> list[str]:
    """The inbound message id each reply or escalation answers, in topic order."""
    out = []
    for record in records:
        data = json.loads(record.value or b"{}")
        if record.topic == "sf.outbound":
            out.append(data["in_reply_to"])
        elif record.topic == "sf.escalations":
            out.append(data["message_id"])
    return out


def read_answers(bootstrap: str, wanted: set[str], timeout_s: float = 90.0) -> list[KafkaRecord]:
    """Replies and escalations, read until every message in `wanted` has one (or the timeout)."""
    return read_topics(
        bootstrap,
        ["sf.outbound", "sf.escalations"],
        until=lambda records: wanted <= set(answered_ids(records)),
        timeout_s=timeout_s,
    )


def where_lost(bootstrap: str, lost: list[str]) -> str:
    """Say how far each unanswered message got, so a failure points at the stage that dropped it."""
    topics = ["sf.ingress", "sf.messages", "sf.dlq", "supportflow-sessions-changelog"]
    records = read_topics(bootstrap, topics, until=lambda rs: False, timeout_s=3)
    produced = {json.loads(r.value)["message_id"]: r for r in records if r.topic == "sf.ingress"}
    normalized = {json.loads(r.value)["message_id"] for r in records if r.topic == "sf.messages"}
    dead = [r.value.decode(errors="replace")[:200] for r in records if r.topic == "sf.dlq"]
    remembered = set()
    for r in records:
        if r.topic == "supportflow-sessions-changelog":
            remembered |= set(json.loads(r.value)["recent_message_ids"])
    lines = [
        f"{m}: on sf.ingress={m in produced}"
        + (f" (partition {produced[m].partition}, offset {produced[m].offset})" if m in produced else "")
        + f", on sf.messages={m in normalized}, in a session's answered ids={m in remembered}"
        for m in lost[:5]
    ]
    from confluent_kafka import Consumer, TopicPartition

    group = Consumer({"bootstrap.servers": bootstrap, "group.id": "supportflow"})
    try:
        partitions = sorted({produced[m].partition for m in lost if m in produced})
        committed = group.committed([TopicPartition("sf.ingress", p) for p in partitions], timeout=10)
    finally:
        group.close()
    commits = {tp.partition: tp.offset for tp in committed}
    return (
        "unanswered messages:\n"
        + "\n".join(lines)
        + f"\ningest group's committed offsets on sf.ingress: {commits}\ndead letters: {dead[:3]}"
    )
