"""Analytics figures: insert throughput into ClickHouse and the time of the full report over 1M events.

Run (from the repository root):

    PYTHONPATH=. python bench/analytics_bench.py [--events 1000000] [--batch 5000] [--out bench/analytics_results.json]

Generates the events once (bench/generate_events.py, deterministic), then for each backend —
chdb in a temporary folder, and a clickhouse-server started here from Debian's binary (or the
server named by --clickhouse-url) — inserts them in batches through the EventStore, timing only
the insert calls, and times `build_report` over the whole 7-day window (median of --repeats runs,
each query also timed on its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track

from bench.generate_events import END, SPAN, generate_events
from connectors.clickhouse import ChdbEventStore, ClickHouseEventStore, load_query, query_names
from connectors.protocols import EventStore
from pipelines.evaluation.analytics_report import build_report, report_parameters
from pipelines.evaluation.provenance import source_state
from schemas import ConversationEvent

console = Console(stderr=True)


async def measure(store: EventStore, events: list[ConversationEvent], batch: int, repeats: int) -> dict[str, Any]:
    await store.migrate()
    insert_s = 0.0
    for i in track(range(0, len(events), batch), description="inserting", console=console):
        chunk = events[i : i + batch]
        started = time.perf_counter()
        await store.insert(chunk)
        insert_s += time.perf_counter() - started
    (row,) = await store.query("SELECT count() AS n FROM events FINAL")
    assert row["n"] == len(events), f"expected {len(events)} events, the table has {row['n']}"
    since = END - SPAN
    report_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        report = await build_report(store, since, END)
        report_s.append(time.perf_counter() - started)
    parameters = report_parameters(since, END)
    per_query_s = {}
    for name in query_names():
        started = time.perf_counter()
        await store.query(load_query(name), parameters)
        per_query_s[name] = round(time.perf_counter() - started, 3)
    return {
        "events": len(events),
        "batch_size": batch,
        "insert_seconds": round(insert_s, 2),
        "insert_events_per_s": round(len(events) / insert_s),
        "report_seconds_runs": [round(s, 3) for s in report_s],
        "report_seconds_median": round(statistics.median(report_s), 3),
        "report_seconds_per_query": per_query_s,
        "report_turns": report.turns,
        "report_conversations": report.conversations,
    }


@contextmanager
def server_url(given: str | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """(url, description): the given server, or one started here from the Debian binary."""
    if given:
        yield given, "server given by --clickhouse-url"
        return
    from tests.support.clickhouse import INSTALL_HINT, clickhouse_server_argv, running_clickhouse_server

    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)  # refused connections while it starts
    argv = clickhouse_server_argv()
    if argv is None:
        raise SystemExit(f"no clickhouse-server binary: {INSTALL_HINT} (or pass --clickhouse-url)")
    with running_clickhouse_server(workdir, argv) as server:
        yield server.fresh_database(), f"{argv[0]} started by the bench"


async def server_version(url: str) -> str:
    store = ClickHouseEventStore(url)
    try:
        return str((await store.query("SELECT version() AS v"))[0]["v"])
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clickhouse-url", default=None)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/analytics_results.json"))
    args = parser.parse_args()

    started = time.perf_counter()
    events = list(track(generate_events(args.events), total=args.events, description="generating", console=console))
    generate_s = time.perf_counter() - started
    console.print(f"generated {len(events):,} events in {generate_s:.1f} s")
    import chdb

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "generate_seconds": round(generate_s, 1),
    }
    with tempfile.TemporaryDirectory(prefix="sf-analytics-bench-") as tmp:
        console.print("[bold]chdb[/bold]")
        chdb_result = asyncio.run(measure(ChdbEventStore(Path(tmp) / "chdb"), events, args.batch, args.repeats))
        results["chdb"] = {"engine": f"chdb {chdb.__version__} (in process)", **chdb_result}
        console.print(results["chdb"])
        if not args.skip_server:
            workdir = Path(tmp) / "server"
            workdir.mkdir()
            with server_url(args.clickhouse_url, workdir) as (url, where):
                console.print(f"[bold]clickhouse-server[/bold] ({where})")
                version = asyncio.run(server_version(url))
                server_result = asyncio.run(measure(ClickHouseEventStore(url), events, args.batch, args.repeats))
                results["clickhouse_server"] = {"engine": f"ClickHouse {version} ({where})", **server_result}
                console.print(results["clickhouse_server"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results["measured_on"] = {**source_state(), "command": "python bench/analytics_bench.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
