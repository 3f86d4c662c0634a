"""Does the sink's chdb store cost more CPU as its folder fills? Reopened on a timer, or kept open.

Run: `PYTHONPATH=. .venv/bin/python bench/chdb_turns.py [--events 120000] [--batch 50]`.
Inserts generated events in batches at the sink's pace (a batch every 50 ms) into a fresh chdb
folder, twice: with a store that gives its turn up every `--reopen-every-s` seconds (what the
shared store did whenever it had held the folder 5 s) and with one that keeps it. Prints and
saves the CPU seconds per 400 batches as the folder grows (`bench/chdb_turns.json`, with the commit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.generate_events import generate_events
from connectors.clickhouse import ChdbEventStore
from pipelines.evaluation.provenance import source_state

PACE_S = 0.05
REPORT_EVERY = 400


async def run(events: list[Any], batch: int, reopen_every_s: float | None) -> list[dict[str, float]]:
    store = ChdbEventStore(Path(tempfile.mkdtemp()) / "chdb", shared=False)
    await store.migrate()
    rows = []
    cpu0, wall0, opened = time.process_time(), time.perf_counter(), time.monotonic()
    for n, start in enumerate(range(0, len(events), batch), start=1):
        if reopen_every_s is not None and time.monotonic() - opened > reopen_every_s:
            await store.close()  # the next call opens the folder again, as a released turn did
            opened = time.monotonic()
        await store.insert(events[start : start + batch])
        await asyncio.sleep(PACE_S)
        if n % REPORT_EVERY == 0:
            cpu, wall = time.process_time(), time.perf_counter()
            row = {"events": start + batch, "cpu_s": round(cpu - cpu0, 2), "wall_s": round(wall - wall0, 2)}
            print(f"reopen every {reopen_every_s} s: {row}", flush=True)
            rows.append(row)
            cpu0, wall0 = cpu, wall
    await store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--reopen-every-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/chdb_turns.json"))
    args = parser.parse_args()
    events = list(generate_events(args.events, seed=1))
    result = {
        "measured_on": {**source_state(), "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "options": {"events": args.events, "batch": args.batch, "pace_s": PACE_S, "report_every_batches": REPORT_EVERY},
        "reopened_every_s": {
            "seconds": args.reopen_every_s,
            "rows": asyncio.run(run(events, args.batch, args.reopen_every_s)),
        },
        "kept_open": asyncio.run(run(events, args.batch, None)),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
