"""What `supportflow status` shows of a running `supportflow run`: each process and each consumer group.

Read from another process: the supervisor's state file (pids, states, restarts), each process's own
health endpoint asked now, and the consumer groups' lag asked of the broker now.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from connectors._process import alive
from connectors.kafka import consumer_group_lag
from pipelines.devstack.supervisor import read_state
from pipelines.runtime.settings import Settings


@dataclass
class ProcessStatus:
    name: str
    kind: str
    pid: int
    state: str
    restarts: int
    uptime_s: float | None
    health: str
    last_exit: str | None
    restart_in_s: float | None


@dataclass
class LagStatus:
    group: str
    lag: int
    partitions: int
    topics: list[str]


@dataclass
class StackStatus:
    data_dir: str
    bootstrap: str | None
    processes: list[ProcessStatus]
    consumer_groups: list[LagStatus]
    lag_error: str | None

    @property
    def failed(self) -> list[str]:
        return [p.name for p in self.processes if p.state == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


def health_of(url: str | None) -> str:
    """'ok', 'failing: <why>', or '-' for a process with no endpoint of its own."""
    if url is None:
        return "-"
    try:
        answer = httpx.get(url, timeout=1.0)
    except httpx.HTTPError as exc:
        return f"failing: {type(exc).__name__}"
    return "ok" if answer.status_code == 200 else f"failing: HTTP {answer.status_code}"


def stack_status(settings: Settings) -> StackStatus | None:
    """The running stack's processes and lag, or None when no `supportflow run` serves from the data dir."""
    data_dir = settings.data_dir.resolve()
    state = read_state(data_dir)
    if state is None:
        return None
    now, monotonic_now = time.time(), time.monotonic()
    processes = []
    for entry in state["processes"]:
        running = entry["state"] in ("starting", "running") and alive(entry["pid"])
        restart_at = entry.get("restart_at")
        processes.append(
            ProcessStatus(
                name=entry["name"],
                kind=entry["kind"],
                pid=entry["pid"],
                # a death the supervisor has not noticed yet (it looks twice a second) shows as it is
                state=entry["state"] if running or entry["state"] not in ("starting", "running") else "dead",
                restarts=entry["restarts"],
                uptime_s=round(now - entry["started_at"], 1) if running else None,
                health=health_of(entry.get("health_url")) if running and entry["state"] == "running" else "-",
                last_exit=entry.get("last_exit"),
                # the supervisor's monotonic clock is this machine's too (CLOCK_MONOTONIC is system-wide)
                restart_in_s=round(max(restart_at - monotonic_now, 0.0), 1) if restart_at is not None else None,
            )
        )
    ingress_url = state.get("ingress_url")
    if ingress_url:
        processes.append(
            ProcessStatus(
                name="ingress",  # served inside `supportflow run` itself
                kind="ingress",
                pid=int(state["supervisor_pid"]),
                state="running",
                restarts=0,
                uptime_s=None,
                health=health_of(f"{ingress_url}/healthz"),
                last_exit=None,
                restart_in_s=None,
            )
        )
    bootstrap = state.get("bootstrap")
    lags: list[LagStatus] = []
    lag_error = None
    if bootstrap:
        conf = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap}).kafka_client_config()
        try:
            lags = [LagStatus(g.group, g.lag, g.partitions, list(g.topics)) for g in consumer_group_lag(conf)]
        except Exception as exc:  # a broker that does not answer is itself what status must show
            lag_error = f"{type(exc).__name__}: {exc}"
    return StackStatus(str(data_dir), bootstrap, processes, lags, lag_error)
