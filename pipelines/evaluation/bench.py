"""`supportflow bench`: throughput and ingress→reply latency through the embedded stack.

Messages are produced straight onto `sf.ingress` (the HTTP layer is not what is measured) and
answers are read from `sf.outbound`/`sf.escalations`; latency is the time from handing a
message to the producer to reading its answer.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.kafka import make_producer, make_reader
from pipelines.devstack.stack import Stack
from pipelines.runtime.settings import Settings
from schemas import RawInbound

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
CHANNELS = ["webchat", "sms", "email", "whatsapp"]


def _messages(run: str, count: int, conversations: int) -> list[RawInbound]:
    out = []
    for i in range(count):
        conversation = i % conversations
        channel = CHANNELS[conversation % len(CHANNELS)]
        out.append(
            RawInbound(
                message_id=f"{run}-{i}",
                channel=channel,  # type: ignore[arg-type]
                sender=f"bench-{conversation}",
                text=TEXTS[i % len(TEXTS)],
            )
        )
    return out


def _pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2) if len(values) > 1 else 0.0


def drive(
    conf: dict[str, Any],
    reader: Consumer,
    count: int,
    conversations: int,
    rate: float | None,
    label: str,
    console: Console,
) -> dict[str, Any]:
    """Send `count` messages (paced at `rate`/s if given) and wait for every answer."""
    run = f"b{uuid.uuid4().hex[:8]}"
    messages = _messages(run, count, conversations)
    sent_at: dict[str, float] = {}
    producer = make_producer(conf)  # sf.ingress is no changelog: batching is safe and spares the broker

    def send_all() -> None:
        start = time.perf_counter()
        for i, message in enumerate(messages):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent_at[message.message_id] = time.perf_counter()
            while True:
                try:
                    producer.produce("sf.ingress", key=message.partition_key(), value=message.to_bytes())
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        producer.flush(60)

    latencies: dict[str, float] = {}
    sender = threading.Thread(target=send_all, name="bench-producer", daemon=True)
    started = time.perf_counter()
    sender.start()
    deadline = time.monotonic() + max(120.0, count / 50)
    columns = [TextColumn(f"{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=count)
        while len(latencies) < count and time.monotonic() < deadline:
            for msg in reader.consume(num_messages=500, timeout=0.005):
                if msg.error() or msg.value() is None:
                    continue
                now = time.perf_counter()
                data = json.loads(msg.value())
                answered = data.get("in_reply_to") or data.get("message_id")
                if answered in sent_at and answered not in latencies:
                    latencies[answered] = (now - sent_at[answered]) * 1000.0
                    progress.update(task, completed=len(latencies))
    finished = time.perf_counter()
    sender.join(timeout=5)
    values = sorted(latencies.values())
    elapsed = finished - started
    in_send_order = [latencies[m.message_id] for m in messages if m.message_id in latencies]
    tenth = max(1, len(in_send_order) // 10)
    deciles = [sorted(in_send_order[i : i + tenth]) for i in range(0, len(in_send_order), tenth)]
    return {
        "messages": count,
        "conversations": conversations,
        "offered_rate_per_s": rate,
        "answered": len(latencies),
        "elapsed_s": round(elapsed, 2),
        "throughput_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": _pct(values, 50),
            "p95": _pct(values, 95),
            "p99": _pct(values, 99),
            "max": round(values[-1], 2) if values else 0.0,
        },
        "p99_ms_by_tenth_of_run": [_pct(d, 99) for d in deciles if len(d) > 1],
    }


def _phase(
    settings: Settings, count: int, conversations: int, rate: float | None, label: str, console: Console
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """One measured run on a freshly started stack, after a short warm-up."""
    with console.status("starting the embedded stack…"):
        stack = Stack(settings, with_sinks=False, with_workspace=False).start(with_ingress=False)  # the stream alone
    try:
        conf = stack.settings.kafka_client_config()
        reader = make_reader(conf, ["sf.outbound", "sf.escalations"], from_beginning=False, fetch_max_wait_ms=10)
        warm = drive(conf, reader, min(200, count), min(50, conversations), None, "warm-up", console)
        measured = drive(conf, reader, count, conversations, rate, label, console)
        reader.close()
        return warm, measured, len(stack.workers)
    finally:
        stack.stop()


def run_bench(
    settings: Settings, count: int, conversations: int, rate: float | None, latency_run: bool, console: Console
) -> dict[str, Any]:
    """Throughput (as fast as possible, or at `rate`), then latency at half the measured rate.

    Each phase gets a fresh stack: tansu's memory storage keeps every record and its fetches
    slow as partitions grow, so a second phase on the same broker would measure the broker's
    history rather than the pipeline.
    """
    warm, throughput, workers = _phase(settings, count, conversations, rate, "throughput", console)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "broker": "embedded tansu" if settings.embedded else settings.kafka_bootstrap_servers,
        "workers": workers,
        "warm_up": warm,
        "throughput": throughput,
    }
    if latency_run and rate is None:
        half = throughput["throughput_per_s"] / 2
        _, results["latency_at_half_rate"], _ = _phase(
            settings, count, conversations, half, f"at {half:.0f}/s", console
        )
    for name in ("throughput", "latency_at_half_rate"):
        if name in results:
            r = results[name]
            console.print(
                f"{name}: {r['answered']}/{r['messages']} answered, {r['throughput_per_s']} msg/s, "
                f"latency p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms"
            )
    return results
