"""Chaos benchmark: the supervised embedded stack under steady load while its processes are killed.

Each run starts `supportflow run` (embedded tansu, PostgreSQL, Triton, `--workers` workers, the
sink, the channel senders, the workspace with the escalation router) in a fresh data dir, sends
`--messages` messages over `--conversations` conversations to sf.ingress at `--rate` per second,
and meanwhile, at random moments (seeded), SIGKILLs a worker, the sink, the senders or the router
process (the supervisor restarts them) and pauses one worker with SIGSTOP for longer than the
consumer session timeout before SIGCONT. It then waits (bounded by `--settle-s`) until every
message is answered and stored, and counts per message id:

  lost        messages with no answer on sf.outbound / sf.escalations, or no row in PostgreSQL
  doubled     messages answered by more than one distinct reply/escalation (a customer told twice)
  absorbed    duplicate records on the topics (the same reply, escalation or message again, from a
              replayed offset) that the idempotent sinks and senders absorbed: one row each in
              PostgreSQL's messages table and the channel outbox

A lost message is traced: on sf.ingress (partition, offset), on sf.messages, in a session's
answered ids, the ingest group's committed offset, dead letters. Results of every run, the git
commit and the configuration go to `--out` (bench/chaos.json).

    .venv/bin/python bench/chaos.py --runs 20 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors._process import die_with_parent  # noqa: E402
from connectors.kafka import consume_all, make_producer, make_reader  # noqa: E402
from pipelines.devstack.supervisor import read_state  # noqa: E402
from pipelines.evaluation.bench import TEXTS  # noqa: E402

console = Console()
SESSION_TIMEOUT_S = 6.0  # the workers' consumer session (pipelines/runtime/app.py)
CHANNELS = ["webchat", "sms", "email"]
NOTICE_PREFIX = "n-"  # pipelines/handover/router.py notice_reply_id


@dataclass
class RunResult:
    run: int
    seed: int
    messages: int
    conversations: int
    kills: dict[str, int] = field(default_factory=dict)
    pauses: int = 0
    restarts_seen: dict[str, int] = field(default_factory=dict)
    failed_processes: list[str] = field(default_factory=list)
    answered: int = 0
    lost: int = 0
    lost_unanswered: list[str] = field(default_factory=list)
    lost_unstored: list[str] = field(default_factory=list)
    lost_traces: list[str] = field(default_factory=list)
    doubled: int = 0
    doubled_ids: list[str] = field(default_factory=list)
    absorbed: dict[str, int] = field(default_factory=dict)
    stored_rows: dict[str, int] = field(default_factory=dict)
    start_s: float = 0.0
    load_s: float = 0.0
    settle_s: float = 0.0
    duration_s: float = 0.0
    error: str | None = None


def traffic(messages: int, conversations: int, run: int) -> list[dict[str, Any]]:
    """Messages interleaved across conversations, as real traffic arrives; ids `c<run>-<conv>-<turn>`."""
    out = []
    turns = -(-messages // conversations)
    for turn in range(turns):
        for conv in range(conversations):
            if len(out) == messages:
                return out
            channel = CHANNELS[conv % len(CHANNELS)]
            sender = {"sms": f"+1555{run:02d}{conv:05d}", "email": f"c{run}-{conv}@example.com"}.get(
                channel, f"web-{run}-{conv}"
            )
            text = f"{TEXTS[(conv + turn) % len(TEXTS)]} (turn {turn})"
            # as the channel's webhook or listener publishes it, having checked the sender
            out.append(
                {
                    "message_id": f"c{run}-{conv}-{turn}",
                    "channel": channel,
                    "sender": sender,
                    "text": text,
                    "address_verified": True,
                }
            )
    return out


class Stack:
    """`supportflow run` as a child process in its own data dir."""

    def __init__(self, data_dir: Path, workers: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        env.update(
            SUPPORTFLOW_DATA_DIR=str(data_dir),
            SUPPORTFLOW_HTTP_PORT="0",
            SUPPORTFLOW_WORKSPACE_PORT="0",
            SUPPORTFLOW_SMTP_LISTEN_PORT="0",
            SUPPORTFLOW_WORKERS=str(workers),
            COLUMNS="200",
        )
        self.data_dir = data_dir
        self.log = open(data_dir / "run.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent(signal.SIGINT),  # a bench stopped any way stops its stack, in order
        )

    def output(self) -> str:
        return (self.data_dir / "run.log").read_text(errors="replace")

    def wait_running(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while "Ctrl-C stops everything." not in self.output():
            if self.process.poll() is not None:
                raise RuntimeError(f"supportflow run exited with {self.process.returncode}:\n{self.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"supportflow run not up within {timeout_s:.0f}s")
            time.sleep(0.5)
        return self.state()

    def state(self) -> dict[str, Any]:
        state = read_state(self.data_dir)
        if state is None:
            raise RuntimeError("no supervisor state: supportflow run is gone")
        return state

    def processes(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.state()["processes"]}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


class Chaos(threading.Thread):
    """Kills and pauses at random moments until told to stop; only processes the supervisor reports running."""

    KINDS = ("worker", "sink", "senders", "router")

    def __init__(self, stack: Stack, rng: random.Random, every_s: float, result: RunResult) -> None:
        super().__init__(daemon=True)
        self.stack, self.rng, self.every_s, self.result = stack, rng, every_s, result
        self.done = threading.Event()
        self.events: list[str] = []

    def run(self) -> None:
        paused_once = False
        started = time.monotonic()
        while not self.done.wait(self.rng.expovariate(1 / self.every_s)):
            try:
                processes = self.stack.processes()
            except RuntimeError:
                return
            workers = [p for p in processes.values() if p["kind"] == "worker" and p["state"] == "running"]
            # the pause comes once, in the middle of the load, when a worker is there to pause
            if not paused_once and time.monotonic() - started > 10 and workers:
                paused_once = True
                self._pause(self.rng.choice(workers))
                continue
            kind = self.rng.choice(self.KINDS)
            targets = [p for p in processes.values() if p["kind"] == kind and p["state"] == "running"]
            if not targets:
                continue
            target = self.rng.choice(targets)
            try:
                os.kill(target["pid"], signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.result.kills[kind] = self.result.kills.get(kind, 0) + 1
            self.events.append(f"{time.monotonic() - started:6.1f}s SIGKILL {target['name']} (pid {target['pid']})")

    def _pause(self, target: dict[str, Any]) -> None:
        pause_s = SESSION_TIMEOUT_S * 1.5
        self.events.append(f"SIGSTOP {target['name']} (pid {target['pid']}) for {pause_s:.0f}s")
        try:
            os.kill(target["pid"], signal.SIGSTOP)
            self.done.wait(pause_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target["pid"], signal.SIGCONT)
        self.result.pauses += 1


def produce_steadily(bootstrap: str, messages: list[dict[str, Any]], rate: float, progress: Any, task: Any) -> None:
    producer = make_producer({"bootstrap.servers": bootstrap}, exact_offsets=True)
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    start = time.monotonic()
    for index, m in enumerate(messages):
        wait = start + index / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        key = f"{m['channel']}:{m['sender']}"
        producer.produce("sf.ingress", key=key, value=json.dumps(m).encode(), on_delivery=delivered)
        producer.poll(0)
        progress.update(task, advance=1)
    if producer.flush(60) != 0 or failures:
        raise RuntimeError(f"records not accepted by the broker: {failures[:3]}")


class Answers:
    """Reads sf.outbound and sf.escalations from the beginning, keeping every record per message id."""

    def __init__(self, bootstrap: str) -> None:
        self.reader = make_reader({"bootstrap.servers": bootstrap}, ["sf.outbound", "sf.escalations"], True)
        self.replies: dict[str, list[str]] = defaultdict(list)  # message id -> reply ids, one per record
        self.escalations: dict[str, list[str]] = defaultdict(list)
        self.notices: dict[str, list[str]] = defaultdict(list)

    def poll(self, max_s: float = 1.0) -> None:
        for record in consume_all(self.reader, idle_s=0.3, max_s=max_s):
            data = json.loads(record.value or b"{}")
            if record.topic == "sf.outbound" and data.get("in_reply_to"):
                reply_id = str(data.get("reply_id"))
                # the router's queue notices ("you are next in line") answer no question: kept apart
                kept = self.notices if reply_id.startswith(NOTICE_PREFIX) else self.replies
                kept[data["in_reply_to"]].append(reply_id)
            elif record.topic == "sf.escalations" and data.get("message_id"):
                self.escalations[data["message_id"]].append(data.get("escalation_id") or data["message_id"])

    def answered(self) -> set[str]:
        return set(self.replies) | set(self.escalations)

    def close(self) -> None:
        self.reader.close()


async def stored_rows(data_dir: Path, ids: list[str]) -> dict[str, Any]:
    """Rows in PostgreSQL per message id: the customer's message, replies to it, its outbox entries."""
    import asyncpg

    from connectors.postgres import EmbeddedPostgres

    dsn = EmbeddedPostgres(data_dir / "postgres").start()  # joins the stack's running server
    conn = await asyncpg.connect(dsn)
    try:
        inbound = await conn.fetch("SELECT message_id FROM messages WHERE message_id = ANY($1::text[])", ids)
        replies = await conn.fetch(
            "SELECT in_reply_to, message_id FROM messages WHERE in_reply_to = ANY($1::text[])", ids
        )
        outbox = await conn.fetch(
            "SELECT o.reply_id, m.in_reply_to FROM channel_outbox o JOIN messages m ON m.message_id = o.reply_id "
            "WHERE m.in_reply_to = ANY($1::text[])",
            ids,
        )
    finally:
        await conn.close()
    return {
        "inbound": {r["message_id"] for r in inbound},
        "replies": Counter(r["in_reply_to"] for r in replies),
        "outbox": Counter(r["in_reply_to"] for r in outbox),
    }


def trace_lost(bootstrap: str, lost: list[str]) -> list[str]:
    """How far each lost message got (the fields tests/support/stream.py `where_lost` reads)."""
    from confluent_kafka import Consumer, TopicPartition

    topics = ["sf.ingress", "sf.messages", "sf.dlq", "supportflow-sessions-changelog"]
    reader = make_reader({"bootstrap.servers": bootstrap}, topics, True)
    try:
        records = list(consume_all(reader, idle_s=1.0, max_s=20.0))
    finally:
        reader.close()
    produced = {}
    normalized, remembered, dead = set(), set(), []
    for r in records:
        try:
            data = json.loads(r.value or b"{}")
        except ValueError:
            continue
        if r.topic == "sf.ingress":
            produced.setdefault(data.get("message_id"), r)
        elif r.topic == "sf.messages":
            normalized.add(data.get("message_id"))
        elif r.topic == "supportflow-sessions-changelog" and isinstance(data, dict):
            remembered |= set(data.get("recent_message_ids", []))
        elif r.topic == "sf.dlq":
            dead.append((r.value or b"").decode(errors="replace"))
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": "supportflow"})
    try:
        parts = sorted({produced[m].partition for m in lost if m in produced})
        commits = {tp.partition: tp.offset for tp in group.committed([TopicPartition("sf.ingress", p) for p in parts])}
    finally:
        group.close()
    lines = []
    for m in lost[:10]:
        where = produced.get(m)
        at = (
            f" (partition {where.partition}, offset {where.offset}; group committed {commits.get(where.partition)})"
            if where is not None
            else ""
        )
        lines.append(
            f"{m}: on sf.ingress={where is not None}{at}, on sf.messages={m in normalized}, "
            f"in a session's answered ids={m in remembered}, dead-lettered={any(m in d for d in dead)}"
        )
    return lines


def one_run(args: argparse.Namespace, run: int, progress: Progress) -> RunResult:
    seed = args.seed * 1000 + run
    rng = random.Random(seed)
    result = RunResult(run, seed, args.messages, args.conversations)
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix=f"chaos-{run}-", dir=args.work_dir))
    os.chmod(data_dir, 0o755)  # the embedded PostgreSQL runs as its own user when we are root
    began = time.monotonic()
    stack = Stack(data_dir, args.workers)
    answers: Answers | None = None
    task = progress.add_task(f"run {run}: starting", total=args.messages)
    try:
        state = stack.wait_running(args.start_timeout_s)
        bootstrap = state["bootstrap"]
        result.start_s = round(time.monotonic() - began, 1)
        messages = traffic(args.messages, args.conversations, run)
        ids = [m["message_id"] for m in messages]
        answers = Answers(bootstrap)
        chaos = Chaos(stack, rng, args.chaos_every_s, result)
        progress.update(task, description=f"run {run}: load + chaos")
        load_began = time.monotonic()
        chaos.start()
        produce_steadily(bootstrap, messages, args.rate, progress, task)
        chaos.done.set()
        chaos.join(timeout=30)
        result.load_s = round(time.monotonic() - load_began, 1)

        progress.update(task, description=f"run {run}: settling")
        settle_began = time.monotonic()
        wanted = set(ids)
        rows: dict[str, Any] = {}
        while True:
            answers.poll()
            if wanted <= answers.answered():
                rows = asyncio.run(stored_rows(data_dir, ids))
                if wanted <= rows["inbound"] and all(rows["replies"][m] for m in answers.replies):
                    break
            if time.monotonic() - settle_began > args.settle_s:
                rows = asyncio.run(stored_rows(data_dir, ids))
                break
            time.sleep(1)
        answers.poll(max_s=3.0)  # a grace period catches duplicates arriving just after
        result.settle_s = round(time.monotonic() - settle_began, 1)

        answered = answers.answered()
        result.answered = len(wanted & answered)
        result.lost_unanswered = sorted(wanted - answered)
        result.lost_unstored = sorted(wanted - rows["inbound"])
        lost = sorted(set(result.lost_unanswered) | set(result.lost_unstored))
        result.lost = len(lost)
        distinct = {m: set(answers.replies.get(m, [])) | set(answers.escalations.get(m, [])) for m in wanted}
        result.doubled_ids = sorted(m for m, found in distinct.items() if len(found) > 1)
        result.doubled = len(result.doubled_ids)
        reply_records = sum(len(answers.replies.get(m, [])) for m in wanted)
        escalation_records = sum(len(answers.escalations.get(m, [])) for m in wanted)
        replies_distinct = sum(len(set(answers.replies.get(m, []))) for m in wanted)
        escalations_distinct = sum(len(set(answers.escalations.get(m, []))) for m in wanted)
        result.absorbed = {
            "sf.outbound duplicate records": reply_records - replies_distinct,
            "sf.escalations duplicate records": escalation_records - escalations_distinct,
        }
        result.absorbed["router notices repeated"] = sum(len(v) - len(set(v)) for v in answers.notices.values())
        result.stored_rows = {
            "customer messages": len(rows["inbound"]),
            "replies and notices": sum(rows["replies"].values()),
            "outbox rows": sum(rows["outbox"].values()),
        }
        if lost:
            result.lost_traces = trace_lost(bootstrap, lost)
        processes = stack.processes()
        result.restarts_seen = {n: p["restarts"] for n, p in processes.items() if p["restarts"]}
        result.failed_processes = [n for n, p in processes.items() if p["state"] == "failed"]
        (data_dir / "chaos-events.txt").write_text("\n".join(chaos.events))
    except Exception as exc:  # a run that breaks is reported, and the next one still runs
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if answers is not None:
            answers.close()
        progress.update(task, description=f"run {run}: stopping")
        stack.stop()
        result.duration_s = round(time.monotonic() - began, 1)
        progress.update(task, description=f"run {run}: done", completed=args.messages)
        if args.keep or result.lost or result.doubled or result.error:
            console.print(f"  run {run}: logs kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def summary_line(r: RunResult) -> str:
    kills = ", ".join(f"{k} {v}" for k, v in sorted(r.kills.items())) or "none"
    absorbed = sum(r.absorbed.values())
    line = (
        f"run {r.run:>2}: {r.messages} messages, kills ({kills}), pauses {r.pauses}, lost {r.lost}, "
        f"doubled {r.doubled}, absorbed {absorbed}, {r.duration_s:.0f}s "
        f"(start {r.start_s:.0f}s, load {r.load_s:.0f}s, settle {r.settle_s:.0f}s)"
    )
    if r.failed_processes:
        line += f", FAILED: {', '.join(r.failed_processes)}"
    if r.error:
        line += f"\n    error: {r.error}"
    for trace in r.lost_traces:
        line += f"\n    lost {trace}"
    return line


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh stack (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the chaos of every run (run i: seed*1000+i)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per run (default 2000)")
    parser.add_argument("--conversations", type=int, default=200, help="conversations they spread over (200)")
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second sent (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="stream workers (default 2)")
    parser.add_argument("--chaos-every-s", type=float, default=3.0, help="mean seconds between kills (default 3)")
    parser.add_argument("--settle-s", type=float, default=180.0, help="longest wait for every answer (180)")
    parser.add_argument("--start-timeout-s", type=float, default=300.0, help="longest wait for the stack (300)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the runs' data dirs go (a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep every run's data dir and logs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "chaos.json", help="the JSON of every run")
    args = parser.parse_args()
    if args.workers < 2:
        parser.error("--workers must be 2 or more: a worker's partitions must have somewhere to go")

    console.print(
        f"chaos: {args.runs} run(s) of {args.messages} messages over {args.conversations} conversations at "
        f"{args.rate:.0f}/s, {args.workers} workers, a kill every ~{args.chaos_every_s:.0f}s, seed {args.seed}"
    )
    results: list[RunResult] = []
    began = datetime.now(UTC)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("runs", total=args.runs)
        for run in range(1, args.runs + 1):
            result = one_run(args, run, progress)
            results.append(result)
            progress.console.print(summary_line(result), markup=False, highlight=False)
            progress.update(overall, advance=1)
            write(args, results, began)

    lost = sum(r.lost for r in results)
    doubled = sum(r.doubled for r in results)
    errors = sum(1 for r in results if r.error)
    console.print(
        f"total: {len(results)} runs, {sum(r.messages for r in results)} messages, "
        f"{sum(sum(r.kills.values()) for r in results)} kills, {sum(r.pauses for r in results)} pauses, "
        f"lost {lost}, doubled {doubled}, absorbed {sum(sum(r.absorbed.values()) for r in results)}, "
        f"runs with errors {errors}; written to {args.out}"
    )
    return 0 if lost == 0 and doubled == 0 and errors == 0 else 1


def write(args: argparse.Namespace, results: list[RunResult], began: datetime) -> None:
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out", "keep")}
    report = {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "started_at": began.isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "configuration": config,
        "runs": [asdict(r) for r in results],
        "totals": {
            "runs": len(results),
            "messages": sum(r.messages for r in results),
            "kills": sum(sum(r.kills.values()) for r in results),
            "pauses": sum(r.pauses for r in results),
            "lost": sum(r.lost for r in results),
            "doubled": sum(r.doubled for r in results),
            "absorbed": sum(sum(r.absorbed.values()) for r in results),
        },
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
