"""How long the whole test suite takes here: run it as `make test` runs it, and record the figure.

Runs `.venv/bin/pytest` (with the options of pyproject.toml: xdist workers and distribution) in
this checkout, times it, reads pytest's summary line, and writes JSON with the commit, the
machine (cores, Python) and the configuration, so the figure can be traced to the code it was
measured on. Run it from a clean clone after `make .venv/.installed`:

    .venv/bin/python bench/suite_time.py --out bench/suite_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "suite_time.json", help="where the JSON goes")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (default: none, the whole suite)")
    args = parser.parse_args()

    pytest = ROOT / ".venv" / "bin" / "pytest"
    if not pytest.exists():
        print("no .venv: run `make .venv/.installed` first", file=sys.stderr)
        return 2
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    command = [str(pytest), "-p", "no:cacheprovider", *args.pytest_args]
    started = time.monotonic()
    load_before = os.getloadavg()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CI": "1"})
    elapsed = time.monotonic() - started
    tail = finished.stdout.strip().splitlines()[-1] if finished.stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|rerun)", tail)}
    result = {
        "figure": "wall-clock time of the whole test suite",
        "seconds": round(elapsed, 1),
        "exit_code": finished.returncode,
        "summary": tail,
        "counts": counts,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain")),
        "command": " ".join(["pytest", *command[1:]]),
        "pytest_addopts": addopts,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if finished.returncode != 0:
        print(finished.stdout[-5000:], file=sys.stderr)
    return finished.returncode


if __name__ == "__main__":
    sys.exit(main())
