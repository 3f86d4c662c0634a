"""`supportflow bench`: the path a customer's message takes, measured end to end.

One run has four phases:

a. the bare intent model (onnxruntime in this process, one thread, batches of `max_batch` as the
   `nlu_model` operator sends them to Triton) on the run's own texts: the ceiling the stream is held to;
b. the most the whole stack sustains: the embedded stack started as `supportflow run` starts it
   (broker, Triton, PostgreSQL with the demo shop, every worker of the default topology, the sink,
   senders, email channel, workspace) with the HTTP ingress in a process of its own, fed by
   `concurrency` conversations at once through the ingress (pipelines/evaluation/bench_load.py);
   throughput is answers read from `sf.outbound`/`sf.escalations` per second;
c. latency (turn handed to the HTTP client → answer read from the topic) at half that rate, paced;
d. drift: the same paced run, long (`drift_messages`), cut in windows of equal message count.

Phases b and c/d each get a fresh stack: tansu's memory storage keeps every record and slows as a
topic grows, so a second phase on the same broker would inherit the first one's history.
Each stack's shop gets customers of the bench's own (one per conversation, with the orders its
texts name) and the profiles that tie Twilio phone numbers to them, before any worker starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.evaluation.bench_breakdown import (
    CpuTimeline,
    cpu_seconds_by_process,
    cpu_share,
    histogram_totals,
    mean_ms,
)
from pipelines.evaluation.bench_load import (
    BENCH_API_KEY_SCOPES,
    Conversation,
    Credentials,
    Driven,
    Mix,
    drive,
    load_mix,
    plan,
    profiles_of,
)
from pipelines.evaluation.provenance import git, source_state
from pipelines.runtime.settings import Settings

# The earlier bench's eight texts: bench/chaos.py still sends them (its load is not this bench's mix).
TEXTS = [
    "where is my order 1234567?",
    "I want to cancel order 7654321",
    "how can I get a refund?",
    "I need to change my shipping address",
    "what payment methods do you accept?",
    "can I talk to a human please",
    "I forgot my password",
    "how long does delivery take?",
]
WARM_UP_INDEX = 200_000  # warm-up customers: apart from the measured ones
WINDOWS = 10
PROFILED_KINDS = ("worker", "ingress", "sink")


@dataclass(frozen=True)
class BenchOptions:
    messages: int = 10_000
    concurrency: int = 256
    drift_messages: int = 50_000
    warm_up_messages: int = 300
    rate: float | None = None  # latency phase rate; None: half the measured throughput
    seed: int = 0
    profile_dir: Path | None = None
    answer_timeout_s: float = 60.0
    one_stack: bool = False  # quick runs: c/d on phase b's stack (its broker then holds b's records too)


def _operators(node: Any) -> list[Any]:
    """A stage's operator chain as names, branches as {label: [...]}, as topology.yaml writes it."""
    out: list[Any] = []
    while node is not None:
        if node.branches:
            out.append({node.operator.name: {label: _operators(child) for label, child in node.branches.items()}})
        else:
            out.append(node.operator.name)
        node = node.next
    return out


def provenance(settings: Settings, options: BenchOptions, mix: Mix, command: str) -> dict[str, Any]:
    """What the figures were measured on: commit (and a dirty tree), topology, settings, machine, texts."""
    from pipelines.runtime.topology import load_topology

    topology = load_topology(settings.topology_file)
    topology_file = Path(settings.topology_file)
    return {
        **source_state(),
        "command": command,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "topology": {
            "file": str(topology_file),
            "sha256": hashlib.sha256(topology_file.read_bytes()).hexdigest()[:16],
            "stages": {name: _operators(stage.root) for name, stage in topology.stages.items()},
        },
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()},
        "settings": settings.model_dump(mode="json", exclude={"data_dir"}),
        "bench_overrides": {  # what bench_settings() puts on top of those for each stack
            "rate_limits.source": "10,000,000 requests / 60 s (every customer comes from one address here)",
            "api_keys": [{"key": "random per stack", "scopes": BENCH_API_KEY_SCOPES}],
            "twilio_auth_token": "random per stack",
            "customer_token_secret": "random per stack",
            "ingress": "its own process (supportflow ingress)",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "texts": mix.describe(),
    }


# ---- phase a: the bare model ---------------------------------------------------------------------------


def bare_model(settings: Settings, texts: Sequence[str], max_batch: int, min_seconds: float = 5.0) -> dict[str, Any]:
    """Texts/s of the intent model alone: tokenizer + onnxruntime, as Triton's CPU instance runs it."""
    from connectors.triton.client import IntentTokenizer, OnnxIntentModel, find_version_dir, load_model_meta

    version_dir = find_version_dir(Path(settings.model_repository), "intent_classifier")
    if version_dir is None:
        raise RuntimeError(f"no intent_classifier model in {settings.model_repository}")
    meta = load_model_meta(version_dir)
    tokenizer = IntentTokenizer.from_version_dir(version_dir, meta.max_length)
    model = OnnxIntentModel(version_dir, intra_op_threads=1)  # triton_models/.../configs/cpu.pbtxt: one thread
    batches = [list(texts[i : i + max_batch]) for i in range(0, len(texts), max_batch)]
    model.run(*_encoded(tokenizer, batches[0]))  # the first run allocates: not the steady state
    done = 0
    started = time.perf_counter()
    while True:
        for batch in batches:
            model.run(*_encoded(tokenizer, batch))
            done += len(batch)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    return {
        "model": f"{version_dir.parent.name}/{version_dir.name}",
        "runtime": "onnxruntime in process, intra_op_threads=1",
        "batch": max_batch,
        "texts": done,
        "distinct_texts": len(set(texts)),
        "elapsed_s": round(elapsed, 2),
        "texts_per_s": round(done / elapsed, 1),
    }


def _encoded(tokenizer: Any, batch: list[str]) -> tuple[Any, Any]:
    tokens = tokenizer.encode(batch)
    return tokens.input_ids, tokens.attention_mask


# ---- the stack --------------------------------------------------------------------------------------


@dataclass
class BenchStack:
    stack: Any
    ingress: subprocess.Popen[bytes]
    url: str
    credentials: Credentials
    settings: Settings


def bench_settings(base: Settings, data_dir: Path) -> tuple[Settings, Credentials]:
    """The user's settings with what a real deployment would have: keys for the app backend, a Twilio
    account, a customer-token key; the per-address request allowance raised, as every customer here comes
    from one address (a real ingress sees them from thousands); every per-channel-sender limit kept."""
    from connectors.channels.api_keys import ApiKey
    from connectors.redis.rate_limit import RateLimit

    credentials = Credentials(
        api_key=secrets.token_urlsafe(32),
        twilio_auth_token=secrets.token_hex(16),
        customer_token_secret=secrets.token_urlsafe(32),
    )
    limits = dict(base.rate_limits)
    limits["source"] = RateLimit(requests=10_000_000, per_seconds=60)
    settings = base.model_copy(
        update={
            "data_dir": data_dir,
            "http_port": 0,
            "workspace_port": 0,
            "smtp_listen_port": 0,
            "api_keys": [ApiKey.model_validate({"key": credentials.api_key, "scopes": BENCH_API_KEY_SCOPES})],
            "twilio_auth_token": SecretStr(credentials.twilio_auth_token),
            "customer_token_secret": SecretStr(credentials.customer_token_secret),
            "webchat_secret": SecretStr(secrets.token_urlsafe(32)),
            "rate_limits": limits,
        }
    )
    return settings, credentials


def _seed(stack: Any, conversations: Sequence[Conversation]) -> None:
    """The conversations' customers and orders into the shop, their phones into sf.profiles."""
    import asyncpg

    from connectors.backends.commerce.seed import customer_rows, insert_rows
    from pipelines.devstack.knowledge import ingest_help_center
    from pipelines.services.profiles import publish_profiles

    async def write() -> None:
        conn = await asyncpg.connect(stack.settings.database_url.get_secret_value())
        try:
            await insert_rows(conn, customer_rows(c.customer for c in conversations))
        finally:
            await conn.close()

    asyncio.run(write())
    ingest_help_center(stack.settings)  # as `supportflow run` does on a first start: knowledge answers on the path
    profiles = profiles_of(conversations)
    if profiles:
        publish_profiles(stack.settings.kafka_client_config(), "sf.profiles", profiles, exact_offsets=True)


def wait_for_ingress(url: str, process: Any, log: Path, timeout_s: float) -> None:
    """Until the ingress at `url` answers /readyz; an error naming its log if it exits or takes too long."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the ingress exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ingress was not ready after {timeout_s:.0f} s; see {log}")
        time.sleep(0.2)


def start_stack(base: Settings, data_dir: Path, conversations: Sequence[Conversation]) -> BenchStack:
    """`supportflow run`'s stack, with the ingress as a process of its own (`supportflow ingress`): in this
    one it would share a GIL with the load generator, which is no part of what is measured."""

    from connectors._process import free_port, spawn
    from pipelines.devstack.stack import Stack

    settings, credentials = bench_settings(base, data_dir)
    stack = Stack(settings)
    stack.ready_timeout_s = 600.0  # the bench's seeding and a shared machine can make start-up slow
    stack.start(with_ingress=False, prepare=lambda s: _seed(s, conversations))
    try:
        port = free_port()
        s = stack.settings
        env = {**stack.worker_env(), **stack.store_env()}
        env.update(
            {
                "SUPPORTFLOW_HTTP_HOST": "127.0.0.1",
                "SUPPORTFLOW_API_KEYS": json.dumps([{"key": credentials.api_key, "scopes": BENCH_API_KEY_SCOPES}]),
                "SUPPORTFLOW_TWILIO_AUTH_TOKEN": credentials.twilio_auth_token,
                "SUPPORTFLOW_CUSTOMER_TOKEN_SECRET": credentials.customer_token_secret,
                "SUPPORTFLOW_WEBCHAT_SECRET": s.webchat_secret.get_secret_value() if s.webchat_secret else "",
                "SUPPORTFLOW_RATE_LIMITS": json.dumps({k: v.model_dump() for k, v in s.rate_limits.items()}),
            }
        )
        argv = [sys.executable, "-m", "pipelines.cli", "ingress", "--port", str(port)]
        ingress = spawn(argv, stack.log_dir / "ingress.log", env=env)
        url = f"http://127.0.0.1:{port}"
        wait_for_ingress(url, ingress, stack.log_dir / "ingress.log", timeout_s=120)
    except BaseException:
        stack.stop()
        raise
    return BenchStack(stack, ingress, url, credentials, stack.settings)


def stop_stack(bench: BenchStack) -> None:
    from connectors._process import stop

    stop(bench.ingress, timeout_s=15)
    bench.stack.stop()


def _wait_for_stage(bench: BenchStack, stage: str, timeout_s: float) -> bool:
    """Whether `stage`'s consumer group committed up to the end of its source topic within `timeout_s`."""
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka import consumer_config
    from pipelines.runtime.app import consumer_group

    topology = bench.stack.topology
    if stage not in topology.stages:
        return True
    source = topology.stages[stage].source
    consumer = Consumer(consumer_config(bench.settings.kafka_client_config(), consumer_group(topology, [stage])))
    try:
        found = consumer.list_topics(source, timeout=10).topics[source].partitions  # the broker's count, capped
        partitions = [TopicPartition(source, p) for p in sorted(found)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in partitions}
        deadline = time.monotonic() + timeout_s
        while True:
            committed = consumer.committed(partitions, timeout=5)
            if all(max(tp.offset, 0) >= ends[tp.partition] for tp in committed):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    finally:
        consumer.close()


def backend_state(bench: BenchStack, wait_for_sink: bool = True) -> dict[str, Any]:
    """What the agent did to the shop for the bench's customers (C100000 on), read from PostgreSQL: the writes'
    log and the orders' state, and the actions the sink stored from the events (reads included)."""
    import asyncpg

    from pipelines.evaluation.bench_load import FIRST_CUSTOMER
    from pipelines.runtime.sinks import wait_until_caught_up

    first = f"C{FIRST_CUSTOMER:06d}"

    if wait_for_sink:
        # the actions table is filled from sf.events, which the low-priority redaction worker writes
        # behind the replies: wait for it first, then for the sink
        _wait_for_stage(bench, "analytics", timeout_s=120)
        wait_until_caught_up(bench.settings, bench.stack.topology, ["postgres"], timeout_s=60)
        time.sleep(2 * bench.settings.sink_batch_wait_ms / 1000)  # the batch tansu's end offset hides

    async def read() -> dict[str, Any]:
        conn = await asyncpg.connect(bench.settings.database_url.get_secret_value())
        try:
            writes = await conn.fetch(
                "SELECT tool, count(*) AS n FROM commerce.action_log WHERE customer_id >= $1 GROUP BY tool", first
            )
            cancelled = await conn.fetchval(
                "SELECT count(*) FROM commerce.orders WHERE customer_id >= $1 AND status = 'cancelled'", first
            )
            refunds = await conn.fetchval(
                "SELECT count(*) FROM commerce.refunds r JOIN commerce.orders o USING (order_number) "
                "WHERE o.customer_id >= $1",
                first,
            )
            moved = await conn.fetchval(
                "SELECT count(*) FROM commerce.orders WHERE customer_id >= $1 "
                "AND shipping_address->>'city' = 'Oakland'",
                first,
            )
            actions = await conn.fetch(
                "SELECT name, status, count(*) AS n FROM actions WHERE customer_id >= $1 GROUP BY name, status", first
            )
            stored = await conn.fetchval("SELECT count(*) FROM messages WHERE customer_id >= $1", first)
        finally:
            await conn.close()
        return {
            "writes_by_tool": {r["tool"]: r["n"] for r in writes},
            "orders_cancelled": cancelled,
            "refunds": refunds,
            "addresses_changed": moved,
            "actions_stored_by_tool": {f"{r['name']}:{r['status']}": r["n"] for r in actions},
            "messages_stored": stored,
        }

    return asyncio.run(read())


# ---- profiling --------------------------------------------------------------------------------------


class Profiler:
    """py-spy on the stack's Python processes (workers, ingress, sink) while phase b runs."""

    def __init__(self, out_dir: Path, bench: BenchStack) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.targets: dict[str, int] = {}
        for worker in bench.stack.workers:
            self.targets[worker.short_name] = worker.process.pid
        if bench.stack.sink is not None:
            self.targets["sink"] = bench.stack.sink.process.pid
        self.targets["ingress"] = bench.ingress.pid
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        py_spy = py_spy_path()
        for name, pid in self.targets.items():
            raw = self.out_dir / f"{name}.folded"
            # --nonblocking: py-spy would otherwise stop the process for every sample, slowing what it measures
            argv = [str(py_spy), "record", "--pid", str(pid), "--rate", "25", "--nonblocking"]
            self.processes[name] = subprocess.Popen(
                [*argv, "--format", "raw", "--output", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=open(self.out_dir / f"{name}.py-spy.log", "wb"),  # noqa: SIM115 - the child owns it
            )

    def stop(self) -> dict[str, Any]:
        for process in self.processes.values():
            process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        return {name: top_entries(self.out_dir / f"{name}.folded") for name in self.processes}


# frames every sample of a thread passes through (threads, the event loop, the command line): ranked by total
# time they would fill the list without saying where the work is
_SCAFFOLDING = tuple(
    f"({where})"
    for where in (
        "threading.py", "asyncio/base_events.py", "asyncio/runners.py", "asyncio/events.py", "<frozen runpy>",
        "futures/thread.py", "mode/threads.py", "mode/worker.py", "uvicorn/main.py", "uvicorn/_compat.py",
        "cli/__main__.py", "cli/main.py", "cli/services.py", "typer/main.py", "typer/core.py", "_click/core.py",
    )
)  # fmt: skip


def top_entries(folded: Path, limit: int = 25) -> dict[str, Any]:
    """From py-spy's folded stacks: samples per function by own time (the leaf) and by total time (on the
    stack at all, once per sample; the thread and event-loop scaffolding left out), as shares of the
    process's samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    if not folded.exists():
        return {"samples": 0, "error": f"no output from py-spy ({folded.name})"}
    for line in folded.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        frames = [_frame_name(f) for f in frames]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            if not name.endswith(_SCAFFOLDING):
                total[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / samples, 1)}
            for name, n in counter.most_common(limit)
        ]

    return {"samples": samples, "own": share(own), "total": share(total)}


def render_profile(profile: dict[str, Any], limit: int = 15) -> str:
    """The profile's top entries as text, per process: own time (the function itself) and total time."""
    lines = [
        "py-spy during phase b (samples at 25/s per thread, --nonblocking; a thread blocked in a C call,",
        "e.g. librdkafka's poll, counts as active; idle threads are left out).",
    ]
    for name, top in profile.get("processes", {}).items():
        lines += ["", f"== {name}: {top.get('samples', 0)} samples"]
        for kind in ("own", "total"):
            lines.append(f"-- by {kind} time")
            lines += [f"{e['percent']:5.1f}%  {e['function']}" for e in top.get(kind, [])[:limit]]
    return "\n".join(lines) + "\n"


def _frame_name(frame: str) -> str:
    """`function (path/to/file.py:123)` → `function (file.py)`: lines apart, one function is one entry."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


# ---- figures ----------------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1], 1)


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": _pct(ordered, 50),
        "p95": _pct(ordered, 95),
        "p99": _pct(ordered, 99),
        "max": round(ordered[-1], 1) if ordered else 0.0,
    }


def summarise(driven: Driven, offered_rate: float | None, concurrency: int | None) -> dict[str, Any]:
    turns = driven.turns
    answered = [t for t in turns if t.latency_ms is not None]
    last = max((t.answered_at for t in answered if t.answered_at is not None), default=driven.finished)
    elapsed = max(1e-9, last - driven.started)
    errors = Counter((t.error or "")[:80] for t in turns if t.error)
    by_channel = {}
    for channel in sorted({t.channel for t in turns}):
        mine = [t.latency_ms for t in answered if t.channel == channel and t.latency_ms is not None]
        by_channel[channel] = {"answered": len(mine), **latency_summary(mine)}
    kinds = Counter(t.kind for t in answered)
    return {
        "offered_rate_per_s": offered_rate,
        "concurrency": concurrency,
        "sent": len(turns),
        "answered": len(answered),
        "replies": kinds.get("reply", 0),
        "escalations": kinds.get("escalation", 0),
        "errors": dict(errors),
        "conversations": driven.conversations_started,
        "elapsed_s": round(elapsed, 2),
        "throughput_per_s": round(len(answered) / elapsed, 1),
        "steady_throughput_per_s": steady_rate(driven.answer_times, driven.started, last),
        "latency_ms": latency_summary([t.latency_ms for t in answered if t.latency_ms is not None]),
        "accept_ms": latency_summary([t.accepted_ms for t in turns if t.accepted_ms is not None]),
        "by_channel": by_channel,
        "by_conversation": dict(Counter(t.script for t in answered)),
    }


def steady_rate(answer_times: Sequence[float], started: float, finished: float) -> float:
    """Answers/s over the middle 80% of the phase: the ramp-up and the drain at the end left out."""
    span = finished - started
    lo, hi = started + 0.1 * span, started + 0.9 * span
    inside = sum(1 for t in answer_times if lo <= t <= hi)
    return round(inside / (hi - lo), 1) if hi > lo else 0.0


def drift(driven: Driven, windows: int = WINDOWS) -> dict[str, Any]:
    """Latency per window of equal message count, in send order, and whether it rose across the run.

    `slope_ms_per_10k` is the least-squares slope of the windows' p50 and p99; `last_over_first` compares
    the last window with the first. Upward drift: the p99 of the last window more than 25% above the
    first's, with a positive slope.
    """
    ordered = sorted((t for t in driven.turns if t.latency_ms is not None), key=lambda t: t.sent_at)
    size = max(1, len(ordered) // windows)
    rows = []
    for w in range(windows):
        part = ordered[w * size : (w + 1) * size] if w < windows - 1 else ordered[w * size :]
        if not part:
            continue
        values = [t.latency_ms for t in part if t.latency_ms is not None]
        rows.append({"window": w + 1, "messages": len(values), **latency_summary(values)})
    if len(rows) < 2:
        return {"windows": rows}
    xs = [(i + 0.5) * size for i in range(len(rows))]

    def slope(key: str) -> float:
        ys = [r[key] for r in rows]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return round(10_000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 2) if den else 0.0

    first, last = rows[0], rows[-1]
    p99_ratio = round(last["p99"] / first["p99"], 2) if first["p99"] else None
    p50_slope, p99_slope = slope("p50"), slope("p99")
    return {
        "windows": rows,
        "slope_ms_per_10k": {"p50": p50_slope, "p99": p99_slope},
        "last_over_first": {
            "p50": round(last["p50"] / first["p50"], 2) if first["p50"] else None,
            "p99": p99_ratio,
        },
        "upward_drift": bool(p99_ratio is not None and p99_ratio > 1.25 and p99_slope > 0),
    }


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets against the figures of this run."""
    bare = results["bare_model"]["texts_per_s"]
    e2e = results["throughput"]["throughput_per_s"]
    out: dict[str, Any] = {
        "e2e_over_bare_model": round(e2e / bare, 3) if bare else None,
        "e2e_at_least_70_percent_of_bare_model": bool(bare and e2e / bare >= 0.7),
        "e2e_at_least_500_per_s": e2e >= 500,
    }
    if "latency" in results:
        out["p99_below_250_ms_at_half_rate"] = results["latency"]["latency_ms"]["p99"] < 250
    if "drift" in results and "upward_drift" in results["drift"]:
        out["no_upward_drift"] = not results["drift"]["upward_drift"]
    return out


# ---- the run ----------------------------------------------------------------------------------------


def _phase_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _run_phase(
    bench: BenchStack,
    options: BenchOptions,
    warm_up: Sequence[Conversation],
    measured: Sequence[Conversation],
    messages: int,
    rate: float | None,
    label: str,
    console: Console,
    on_started: Callable[[], None] = lambda: None,
) -> Driven:
    conf = bench.settings.kafka_client_config()
    with _phase_bar(console) as bar:
        if warm_up:
            task = bar.add_task("warm-up", total=options.warm_up_messages)
            asyncio.run(
                drive(
                    bench.url, conf, bench.credentials, warm_up, options.warm_up_messages, None,
                    min(options.concurrency, 32), lambda: bar.advance(task), options.answer_timeout_s,
                )
            )  # fmt: skip
        task = bar.add_task(label, total=messages)
        on_started()
        return asyncio.run(
            drive(
                bench.url, conf, bench.credentials, measured, messages, rate,
                options.concurrency, lambda: bar.advance(task), options.answer_timeout_s,
            )
        )  # fmt: skip


def _throughput(
    bench: BenchStack,
    options: BenchOptions,
    warm_up: Sequence[Conversation],
    conversations: Sequence[Conversation],
    results: dict[str, Any],
    console: Console,
) -> None:
    """Phase b, with py-spy on the stack's processes while it runs when asked."""
    results["stack"] = {
        "workers": [w.short_name for w in bench.stack.workers],
        "nlu": bench.stack.nlu_summary(),
        "stores": bench.stack.store_summary(),
        "ingress": "its own process (supportflow ingress), loopback, keep-alive",
    }
    profiler = Profiler(options.profile_dir, bench) if options.profile_dir is not None else None
    metrics_urls = [w.health_url for w in bench.stack.workers if w.health_url]
    marks: dict[str, Any] = {}

    def started() -> None:
        marks["cpu"], marks["timings"] = cpu_seconds_by_process(os.getpid()), histogram_totals(metrics_urls)
        marks["at"] = time.monotonic()
        if profiler is not None:
            profiler.start()

    try:
        driven = _run_phase(
            bench, options, warm_up, conversations, options.messages, None, "phase b: throughput", console,
            on_started=started,
        )  # fmt: skip
    finally:
        if profiler is not None:
            results["profile"] = {"dir": str(options.profile_dir), "processes": profiler.stop()}
    results["throughput"] = summarise(driven, None, options.concurrency)
    if marks:
        elapsed = time.monotonic() - marks["at"]
        results["throughput"]["breakdown"] = {
            "cores_by_process": cpu_share(marks["cpu"], cpu_seconds_by_process(os.getpid()), elapsed),
            "mean_ms_per_record": mean_ms(marks["timings"], histogram_totals(metrics_urls)),
        }
    results["throughput"]["backend"] = backend_state(bench)
    t = results["throughput"]
    console.print(
        f"throughput: {t['answered']}/{t['sent']} answered, {t['throughput_per_s']} answers/s "
        f"(steady {t['steady_throughput_per_s']}), p50 {t['latency_ms']['p50']} ms"
    )


def _latency(
    bench: BenchStack,
    options: BenchOptions,
    warm_up: Sequence[Conversation],
    conversations: Sequence[Conversation],
    rate: float,
    results: dict[str, Any],
    console: Console,
) -> None:
    """Phases c and d: one paced run; its percentiles, and its windows when it is the long one."""
    messages = max(options.messages, options.drift_messages)
    timeline = CpuTimeline(os.getpid())
    metrics_urls = [w.health_url for w in bench.stack.workers if w.health_url]
    marks: dict[str, Any] = {}

    def started() -> None:
        marks["timings"] = histogram_totals(metrics_urls)
        timeline.start()

    try:
        driven = _run_phase(
            bench, options, warm_up, conversations, messages, rate, f"phases c/d: {rate:.0f}/s", console,
            on_started=started,
        )  # fmt: skip
    finally:
        samples = timeline.stop()
    results["latency"] = summarise(driven, round(rate, 1), None)
    results["latency"]["cores_timeline"] = samples
    if marks:  # where a turn's time goes when the stack is not saturated
        results["latency"]["breakdown"] = {
            "mean_ms_per_record": mean_ms(marks["timings"], histogram_totals(metrics_urls))
        }
    results["latency"]["backend"] = backend_state(bench)
    if options.drift_messages:
        results["drift"] = drift(driven)
    lat = results["latency"]
    console.print(
        f"latency at {rate:.0f}/s: {lat['answered']}/{lat['sent']} answered, p50 {lat['latency_ms']['p50']} ms, "
        f"p95 {lat['latency_ms']['p95']} ms, p99 {lat['latency_ms']['p99']} ms"
    )


def py_spy_path() -> Path:
    """py-spy beside this interpreter (the `dev` extra); RuntimeError with the install command when missing."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise RuntimeError("py-spy is not installed: pip install -e '.[dev]'")
    return py_spy


def run_bench(base: Settings, options: BenchOptions, console: Console, command: str = "") -> dict[str, Any]:
    """Phases a-d (see the module's docstring); the results as the JSON `bench/results.json` holds."""
    from operators.nlu_model import NluModel
    from pipelines.runtime.topology import load_topology

    if not base.embedded or base.database_url is not None:
        raise ValueError("the bench starts its own embedded stack: unset KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL")
    if options.profile_dir is not None:
        py_spy_path()  # refuse now, not after minutes of phase a
    mix = load_mix()
    results: dict[str, Any] = {"measured_on": provenance(base, options, mix, command)}
    nlu = load_topology(base.topology_file).operator(NluModel)
    max_batch = nlu.config.max_batch if nlu is not None else 32  # type: ignore[attr-defined]

    warm_up = plan(mix, options.warm_up_messages, min(options.concurrency, 32), options.seed + 1, WARM_UP_INDEX)
    throughput_plan = plan(mix, options.messages, options.concurrency, options.seed, 0)
    texts = [t for c in throughput_plan for t in c.texts][: options.messages]
    paced_messages = max(options.messages, options.drift_messages)

    with console.status("phase a: the bare intent model on the run's texts…"):
        results["bare_model"] = bare_model(base, texts, max_batch)
    console.print(f"bare model: {results['bare_model']['texts_per_s']} texts/s (batches of {max_batch})")

    if options.one_stack:
        # customers for the paced run are seeded up front, so its rate cannot size them: enough for
        # `concurrency` conversations cut short, as in phase b
        paced_plan = plan(mix, paced_messages, options.concurrency, options.seed + 2, len(throughput_plan))
        with tempfile.TemporaryDirectory(prefix="supportflow-bench-") as tmp:
            with console.status("starting the embedded stack…"):
                bench = start_stack(base, Path(tmp), [*warm_up, *throughput_plan, *paced_plan])
            try:
                _throughput(bench, options, warm_up, throughput_plan, results, console)
                rate = options.rate or max(1.0, results["throughput"]["throughput_per_s"] / 2)
                _latency(bench, options, [], paced_plan, rate, results, console)
            finally:
                stop_stack(bench)
    else:
        with tempfile.TemporaryDirectory(prefix="supportflow-bench-") as tmp:
            with console.status("phase b: starting the embedded stack…"):
                bench = start_stack(base, Path(tmp), [*warm_up, *throughput_plan])
            try:
                _throughput(bench, options, warm_up, throughput_plan, results, console)
            finally:
                stop_stack(bench)
        rate = options.rate or max(1.0, results["throughput"]["throughput_per_s"] / 2)
        # conversations in flight at once are rate x latency: room for 20 s of latency before the pacer
        # would run out of seeded customers and end the run early
        paced_plan = plan(mix, paced_messages, int(rate * 20) + 64, options.seed + 2, 0)
        with tempfile.TemporaryDirectory(prefix="supportflow-bench-") as tmp:
            with console.status("phases c and d: a fresh stack…"):
                bench = start_stack(base, Path(tmp), [*warm_up, *paced_plan])
            try:
                _latency(bench, options, warm_up, paced_plan, rate, results, console)
            finally:
                stop_stack(bench)
    results["targets"] = targets(results)
    return results


def keep_previous(out: Path) -> Path | None:
    """Move an earlier results file aside as `<stem>_<its commit>_previous.json`, history kept."""
    if not out.exists():
        return None
    try:
        old = json.loads(out.read_text())
        commit = str(old.get("measured_on", {}).get("commit", ""))[:7]
    except (ValueError, AttributeError):
        commit = ""
    if not commit:
        log = git("log", "-1", "--format=%h", "--", str(out))
        commit = log or "unknown"
    target = out.with_name(f"{out.stem}_{commit}_previous.json")
    out.rename(target)
    return target
