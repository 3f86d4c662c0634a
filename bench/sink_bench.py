"""Sink throughput: records/s from a topic into each store through the real `ConsumerLoop`.

Unlike `analytics_bench.py` and `postgres_sink.py`, which time the stores alone, this puts N
events on `sf.events` of an embedded tansu first, then times a sink consumer group reading,
decoding, writing (batches of `--batch`) and committing them all — what `supportflow sink` does:

    PYTHONPATH=. python bench/sink_bench.py --events 100000 --out bench/sink_results.json

Targets: chdb (shared folder, as the sink runs it), a clickhouse-server 18.16 started here if the
binary exists, and an embedded PostgreSQL. Each target reads the same topic in its own group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress

from bench.generate_events import generate_events
from connectors.kafka import create_topics, make_producer
from connectors.postgres import EmbeddedPostgres
from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.evaluation.provenance import source_state
from pipelines.runtime.app import topic_plans
from pipelines.runtime.consumer_loop import ConsumerLoop, TopicWriterSink
from pipelines.runtime.settings import PROJECT_DIR, Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.sinks import open_writer

console = Console()


def fill_topic(bootstrap: str, count: int) -> None:
    producer = make_producer({"bootstrap.servers": bootstrap}, exact_offsets=False, **{"linger.ms": 5})
    with Progress(console=console) as progress:
        task = progress.add_task(f"producing {count:,} events to sf.events", total=count)
        for i, event in enumerate(generate_events(count)):
            producer.produce("sf.events", key=event.customer_id.encode(), value=event.to_bytes())
            if i % 1000 == 999:
                producer.poll(0)
                progress.advance(task, 1000)
        producer.flush(60)
        progress.update(task, completed=count)


async def time_sink(settings: Settings, target: str, group: str, count: int) -> dict[str, Any]:
    topology = load_topology(PROJECT_DIR / "topology.yaml")
    async with open_writer(settings, target, migrate=True) as write:  # type: ignore[arg-type]
        runner = ConsumerLoop(target, settings, topology, ["sf.events"], TopicWriterSink(target, write), group_id=group)
        started = time.perf_counter()
        task = asyncio.create_task(runner.run())
        with Progress(console=console) as progress:
            bar = progress.add_task(f"sink → {group}", total=count)
            while runner.records_written < count:
                if task.done():
                    task.result()
                    raise RuntimeError(f"{group} stopped after {runner.records_written} records")
                progress.update(bar, completed=runner.records_written)
                await asyncio.sleep(0.05)
            progress.update(bar, completed=count)
        elapsed = time.perf_counter() - started
        runner.stop()
        await task
    return {"records": count, "seconds": round(elapsed, 2), "records_per_s": round(count / elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="records per store write (the sink's default)")
    parser.add_argument("--out", type=Path, default=Path("bench/sink_results.json"))
    args = parser.parse_args()

    results: dict[str, Any] = {"events": args.events, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        topology = load_topology(PROJECT_DIR / "topology.yaml")
        create_topics({"bootstrap.servers": broker.bootstrap}, topic_plans(topology))
        fill_topic(broker.bootstrap, args.events)
        base = Settings(
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_exact_offsets=True,
            data_dir=Path(tmp),
            sink_batch_size=args.batch,
        )
        results["chdb"] = asyncio.run(time_sink(base, "clickhouse", "bench-chdb", args.events))
        console.print(f"chdb: {results['chdb']}")

        from tests.support.clickhouse import clickhouse_server_argv, running_clickhouse_server

        argv = clickhouse_server_argv()
        if argv is None:
            results["clickhouse_server"] = "skipped: no clickhouse-server binary"
        else:
            (Path(tmp) / "clickhouse").mkdir()
            with running_clickhouse_server(Path(tmp) / "clickhouse", argv) as server:
                with_server = base.model_copy(update={"clickhouse_url": SecretStr(server.fresh_database())})
                results["clickhouse_server"] = asyncio.run(
                    time_sink(with_server, "clickhouse", "bench-server", args.events)
                )
                console.print(f"clickhouse-server: {results['clickhouse_server']}")

        with EmbeddedPostgres(Path(tmp) / "postgres") as postgres:
            with_pg = base.model_copy(update={"database_url": SecretStr(postgres.start())})
            results["postgres"] = asyncio.run(time_sink(with_pg, "postgres", "bench-postgres", args.events))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    results["measured_on"] = {**source_state(), "command": "python bench/sink_bench.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print_json(json.dumps(results))


if __name__ == "__main__":
    main()
