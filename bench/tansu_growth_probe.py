"""Does the embedded broker slow down as a topic grows? Produce→consume latency per 20k records.

Run: `.venv/bin/python bench/tansu_growth_probe.py [--rounds 6]`. Starts its own tansu, fills one
8-partition topic 20,000 records at a time, and between fills times 50 single records from
produce to consume on that topic (median and max, ms), plus the time each fill took.
"""

from __future__ import annotations

import argparse
import statistics
import time

from connectors.kafka import TopicPlan, create_topics, make_producer, make_reader
from pipelines.devstack.embedded import EmbeddedBroker

PROBE = b"p" * 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="fills of 20,000 records (default 6)")
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        conf = {"bootstrap.servers": broker.bootstrap}
        create_topics(conf, [TopicPlan("t", 8)])
        producer = make_producer(conf, exact_offsets=True)
        reader = make_reader(conf, ["t"], from_beginning=False, fetch_max_wait_ms=10)
        for round_ in range(args.rounds):
            latencies = []
            for i in range(50):
                started = time.perf_counter()
                producer.produce("t", key=str(i), value=PROBE)
                producer.flush()
                while True:
                    msg = reader.poll(0.001)
                    if msg is not None and not msg.error() and msg.value() == PROBE:
                        break
                latencies.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            for i in range(20_000):
                producer.produce("t", key=str(i), value=b"y" * 500)
                producer.poll(0)
            producer.flush()
            print(
                f"records {round_ * 20_000:>7}: produce->consume median {statistics.median(latencies):6.1f} ms, "
                f"max {max(latencies):8.1f} ms; next 20k produced in {time.perf_counter() - started:5.1f} s",
                flush=True,
            )
        reader.close()


if __name__ == "__main__":
    main()
