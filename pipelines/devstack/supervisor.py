"""Supervision of the embedded stack's children: restart with backoff, give up on a crash loop, tell.

`supportflow run` registers every child it starts (workers, sink, senders, email channel, the
workspace with its escalation router, Triton, and the embedded broker and PostgreSQL). Its main
thread then calls `check()` twice a second: a child that died is logged (exit code or signal),
restarted after a capped exponential delay (tenacity's wait helper), and counted; one that keeps
dying without ever running `stable_s` gives up after `max_restarts` and is reported loudly as
failed. The embedded broker and PostgreSQL have no `launch`: they are only watched. The broker
keeps its records in memory, so a new one would be an empty broker — restarting it would hide a
loss rather than repair it; a PostgreSQL that crashed wants an operator's look at its log.

Every change is written to `run/processes.json` in the data dir, which `supportflow status` reads
from another terminal. Restarts happen on the thread that calls `check()`: children are bound to
the thread that forked them (PR_SET_PDEATHSIG), so that thread must live as long as the stack.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tenacity import RetryCallState, wait_exponential

log = logging.getLogger(__name__)

STATE_FILE = Path("run") / "processes.json"
State = Literal["starting", "running", "restarting", "failed"]


@dataclass
class Child:
    """One supervised process. `launch` starts a fresh copy (None: watched, never restarted)."""

    name: str
    kind: str
    process: subprocess.Popen[bytes]
    launch: Callable[[], subprocess.Popen[bytes]] | None = None
    ready: Callable[[], bool] = lambda: True
    health_url: str | None = None
    log_file: Path | None = None
    state: State = "starting"
    restarts: int = 0
    crashes_in_a_row: int = 0
    started_at: float = field(default_factory=time.time)
    running_since: float | None = None
    last_exit: str | None = None
    restart_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": self.process.pid,
            "state": self.state,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
            "restart_at": self.restart_at,
            "health_url": self.health_url,
            "log_file": str(self.log_file) if self.log_file else None,
        }


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGKILL' (Popen reports a signal as a negative code)."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Supervisor:
    """Watches registered children; `check()` does one round of detecting, restarting and reporting."""

    def __init__(
        self,
        data_dir: Path,
        max_restarts: int = 5,
        stable_s: float = 60.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        extra_state: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.state_file = data_dir / STATE_FILE
        self.max_restarts = max_restarts
        self.stable_s = stable_s
        self.wait = wait_exponential(multiplier=backoff_min_s, min=backoff_min_s, max=backoff_max_s)
        self.extra_state = extra_state or dict
        self.children: dict[str, Child] = {}
        self.stopping = False

    def add(self, child: Child) -> Child:
        """Watch `child` (replacing any earlier one of the same name, e.g. after a start retried)."""
        self.children[child.name] = child
        log.info("started %s (pid %d)", child.name, child.process.pid)
        self.write_state()
        return child

    def backoff_s(self, attempt: int) -> float:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        return float(self.wait(state))

    def check(self) -> None:
        """One round: notice deaths, start what is due, mark what became ready; write the state if it changed."""
        if self.stopping:
            return
        changed = False
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.state in ("starting", "running") and child.process.poll() is not None:
                self._died(child, now)
                changed = True
            elif child.state == "restarting" and child.restart_at is not None and now >= child.restart_at:
                self._restart(child)
                changed = True
            elif child.state == "starting" and child.ready():
                child.state = "running"
                child.running_since = now
                if child.restarts:
                    log.info("%s (pid %d) runs again after restart %d", child.name, child.process.pid, child.restarts)
                changed = True
            elif (
                child.state == "running"
                and child.crashes_in_a_row
                and child.running_since is not None
                and now - child.running_since >= self.stable_s
            ):
                child.crashes_in_a_row = 0  # it ran long enough: the next crash starts the backoff afresh
        if changed:
            self.write_state()

    def _died(self, child: Child, now: float) -> None:
        child.last_exit = describe_exit(child.process.returncode)
        _kill_group_left_behind(child.process.pid)
        seen = f"{child.name} (pid {child.process.pid}) died: {child.last_exit}"
        where = f"; see {child.log_file}" if child.log_file else ""
        if child.launch is None:
            child.state = "failed"
            log.error("%s — it is not restarted (%s); the stack is degraded%s", seen, _why_not(child.kind), where)
            return
        child.crashes_in_a_row += 1
        if child.crashes_in_a_row > self.max_restarts:
            child.state = "failed"
            log.error(
                "%s — it crashed %d times in a row without running %.0f s; giving up on it. "
                "THE STACK IS DEGRADED: restart `supportflow run` after fixing the cause%s",
                seen,
                child.crashes_in_a_row,
                self.stable_s,
                where,
            )
            return
        delay = self.backoff_s(child.crashes_in_a_row)
        child.state = "restarting"
        child.restart_at = now + delay
        log.warning("%s; restart %d in %.1f s%s", seen, child.restarts + 1, delay, where)

    def _restart(self, child: Child) -> None:
        assert child.launch is not None
        child.restart_at = None
        try:
            child.process = child.launch()
        except Exception as exc:  # a launch that fails counts as a crash of the new copy
            log.warning("could not restart %s: %s", child.name, exc)
            child.crashes_in_a_row += 1
            child.restarts += 1
            child.state = "restarting"
            child.restart_at = time.monotonic() + self.backoff_s(child.crashes_in_a_row)
            return
        child.restarts += 1
        child.state = "starting"
        child.started_at = time.time()
        child.running_since = None
        log.warning("restarted %s as pid %d (restart %d)", child.name, child.process.pid, child.restarts)

    def failed(self) -> list[Child]:
        return [c for c in self.children.values() if c.state == "failed"]

    def write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "written_at": time.time(),
            "processes": [c.as_dict() for c in self.children.values()],
            **self.extra_state(),
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=1))
        partial.replace(self.state_file)  # a reader never sees half a file

    def close(self) -> None:
        """The stack is stopping: no more restarts, and no state file left to mislead `status`."""
        self.stopping = True
        self.state_file.unlink(missing_ok=True)


def _why_not(kind: str) -> str:
    return {
        "broker": "the embedded broker keeps its records in memory: a new one would be empty",
        "postgres": "PostgreSQL crashing needs a look at its log",
        "ingress": "the HTTP ingress runs inside `supportflow run`",
    }.get(kind, "no restart configured")


def _kill_group_left_behind(pid: int) -> None:
    """A dead child's helpers (Triton's backend stubs, postgres's backends) share its process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """What the `supportflow run` serving from `data_dir` last wrote, if it is alive."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        os.kill(int(state["supervisor_pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None
