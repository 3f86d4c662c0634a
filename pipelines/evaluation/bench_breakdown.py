"""Where a bench phase's CPU and time go, read off the running stack rather than guessed.

Two views that py-spy cannot give: CPU seconds of every process of the stack (the broker, Triton
and PostgreSQL are not Python), from /proc; and the mean time per operator and per stage, from the
workers' own Prometheus histograms (the difference of their sums and counts over the phase).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = ["CpuTimeline", "cpu_seconds_by_process", "cpu_share", "histogram_totals", "mean_ms"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SAMPLE = re.compile(r'^(supportflow_(?:operator|stage)_seconds)_(sum|count)\{(?:operator|stage)="([^"]+)"\} (\S+)$')


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a process; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields start after its last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def _name(pid: int) -> str:
    """`worker-0`, `sink`, `ingress`, … for the project's processes; the executable's name otherwise."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    return process_name(argv)


def process_name(argv: list[str]) -> str:
    """The name `_name` gives a process with this command line."""
    if "pipelines.cli" in argv:
        command = argv[argv.index("pipelines.cli") + 1] if argv.index("pipelines.cli") + 1 < len(argv) else "cli"
        ready = next((a for a in argv if a.endswith(".ready")), "")
        return Path(ready).stem if command == "worker" and ready else command
    # PostgreSQL's backends rewrite their title ("postgres: user db 127.0.0.1(4711) idle"): one name for all
    exe = Path(argv[0].split(":")[0].split(" ")[0]).name if argv and argv[0] else "?"
    return re.sub(r"-v?\d.*$", "", exe) or exe  # tansu-v0.6.0-510f3e2 -> tansu


def cpu_seconds_by_process(root_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each process under `root_pid` (itself excluded), summed by name."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], used[int(entry.name)] = stat
    under: set[int] = set()
    frontier = [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in under]
        under.update(children)
        frontier.extend(children)
    totals: dict[str, float] = defaultdict(float)
    for pid in under:
        totals[_name(pid)] += used[pid]
    return dict(totals)


def cpu_share(before: Mapping[str, float], after: Mapping[str, float], elapsed_s: float) -> dict[str, float]:
    """Cores used on average by each process over the phase, largest first (a process that started
    during the phase counts from zero; 1.0 is one core busy the whole time)."""
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    return {name: round(s / elapsed_s, 3) for name, s in sorted(used.items(), key=lambda kv: -kv[1]) if s > 0}


def histogram_totals(urls: Iterable[str], timeout_s: float = 5.0) -> dict[str, tuple[float, float]]:
    """`{"operator:nlu_model": (sum_seconds, count), "stage:agent": …}` over every worker's /metrics."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for url in urls:
        try:
            text = httpx.get(url, timeout=timeout_s).text
        except httpx.HTTPError:
            continue  # a worker that died mid-phase: its share is missing, the others still count
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                family, kind, label, value = match.groups()
                key = f"{'operator' if 'operator' in family else 'stage'}:{label}"
                totals[key][0 if kind == "sum" else 1] += float(value)
    return {key: (s, c) for key, (s, c) in totals.items()}


def mean_ms(before: Mapping[str, tuple[float, float]], after: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """Mean milliseconds per record of each operator and stage over the phase, and how many records."""
    out: dict[str, Any] = {}
    for key, (total, count) in sorted(after.items()):
        s0, c0 = before.get(key, (0.0, 0.0))
        if count > c0:
            out[key] = {"records": int(count - c0), "mean_ms": round(1000 * (total - s0) / (count - c0), 2)}
    return out


class CpuTimeline:
    """Cores used by each process of the stack, interval by interval, while a long phase runs.

    The paced run's latency drifts after thousands of turns; one average over the phase cannot say
    which process grew. Sampled in a thread so the load generator's event loop is not held up.
    """

    def __init__(self, root_pid: int, interval_s: float = 30.0, top: int = 8) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.top = top
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-timeline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._thread.ident is None:  # the phase failed before it started
            return self.samples
        self._thread.join(timeout=self.interval_s + 5)
        return self.samples

    def _run(self) -> None:
        started = previous_at = time.monotonic()
        previous = cpu_seconds_by_process(self.root_pid)
        while not self._stop.wait(self.interval_s):
            now, current = time.monotonic(), cpu_seconds_by_process(self.root_pid)
            cores = cpu_share(previous, current, now - previous_at)
            self.samples.append({"at_s": round(now - started, 1), "cores": dict(list(cores.items())[: self.top])})
            previous, previous_at = current, now
