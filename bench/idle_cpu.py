"""CPU the embedded stack spends with no traffic at all, per process, for each reply-path fetch wait.

    python bench/idle_cpu.py [--waits 10 25 50] [--partitions 2] [--seconds 20] [--out bench/results_idle_cpu.json]

For each wait and each partition cap: `supportflow run` on embedded defaults in a fresh temporary data folder,
with SUPPORTFLOW_KAFKA_FETCH_MAX_WAIT_MS and SUPPORTFLOW_KAFKA_MAX_PARTITIONS set to them (8 is the topology's
own count, i.e. no cap); once it says it is up (its help center ingested), the CPU
seconds of every process under it are read from /proc (`cpu_seconds_by_process`, as `supportflow bench`
reads them) at the start and the end of `--seconds` of idleness; then it is stopped with Ctrl-C.
Why it matters: tansu answers a fetch only at its deadline, so the reply path's readers fetch all the time;
what they cost with no customer is what every customer's turn competes with (README, "Why the embedded
broker slows down").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.evaluation.bench_breakdown import cpu_seconds_by_process, cpu_share  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402

READY = "Ctrl-C stops everything."


def idle_cores(wait_ms: int, max_partitions: int, seconds: float, start_timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="supportflow-idle-") as tmp:
        env = {
            **os.environ,
            "SUPPORTFLOW_DATA_DIR": str(Path(tmp) / "data"),
            "SUPPORTFLOW_KAFKA_FETCH_MAX_WAIT_MS": str(wait_ms),
            "SUPPORTFLOW_KAFKA_MAX_PARTITIONS": str(max_partitions),
            "SUPPORTFLOW_HTTP_PORT": "0",
        }
        log_path = Path(tmp) / "run.log"
        with log_path.open("w") as log:
            run = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + start_timeout_s
            while READY not in log_path.read_text(errors="replace"):
                if run.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"supportflow run did not come up:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            time.sleep(5)  # the first fetches, joins and the workspace's first reads settle
            before = cpu_seconds_by_process(run.pid)
            time.sleep(seconds)
            cores = cpu_share(before, cpu_seconds_by_process(run.pid), seconds)
        finally:
            run.send_signal(signal.SIGINT)
            try:
                run.wait(timeout=60)
            except subprocess.TimeoutExpired:
                run.kill()
    return {
        "fetch_max_wait_ms": wait_ms,
        "max_partitions": max_partitions,
        "idle_s": seconds,
        "cores": cores,
        "total": round(sum(cores.values()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waits", type=int, nargs="+", default=[10, 25, 50], help="fetch waits to try, in ms")
    parser.add_argument(
        "--partitions", type=int, nargs="+", default=[2], help="partition caps to try (8: the topology's own counts)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="idle seconds measured for each")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="longest the stack may take to come up")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results_idle_cpu.json")
    args = parser.parse_args()
    runs = []
    for partitions in args.partitions:
        for wait in args.waits:
            print(f"fetch wait {wait} ms, at most {partitions} partitions: starting the stack ...", flush=True)
            runs.append(idle_cores(wait, partitions, args.seconds, args.start_timeout))
            print(json.dumps(runs[-1]), flush=True)
    out = {
        **source_state(),
        "command": "python bench/idle_cpu.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count()},
        "runs": runs,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
