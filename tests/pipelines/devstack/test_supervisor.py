"""The supervisor on real child processes: restarts with backoff, gives up on a crash loop, reports."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.devstack.embedded import spawn, stop
from pipelines.devstack.supervisor import Child, Supervisor, describe_exit, read_state

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def check_until(supervisor: Supervisor, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Drive the supervisor as `supportflow run`'s loop does, until `condition` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the supervisor did not get there in time"
        supervisor.check()
        time.sleep(0.05)


@pytest.fixture
def launched(tmp_path: Path):
    processes: list[subprocess.Popen[bytes]] = []

    def launch(argv: list[str]) -> Callable[[], subprocess.Popen[bytes]]:
        def start() -> subprocess.Popen[bytes]:
            process = spawn(argv, tmp_path / "child.log")
            processes.append(process)
            return process

        return start

    yield launch
    for process in processes:
        stop(process, timeout_s=5)


def test_a_killed_child_is_restarted_logged_and_counted(tmp_path, launched, caplog):
    supervisor = Supervisor(tmp_path, backoff_min_s=0.2)
    start = launched(SLEEPER)
    child = supervisor.add(Child("worker-0", "worker", start(), launch=start))
    check_until(supervisor, lambda: child.state == "running")
    first = child.process.pid

    caplog.set_level(logging.INFO, logger="pipelines.devstack.supervisor")
    os.kill(first, signal.SIGKILL)
    check_until(supervisor, lambda: child.state == "running" and child.process.pid != first)

    assert child.restarts == 1 and child.last_exit == "killed by SIGKILL"
    said = caplog.text
    assert f"worker-0 (pid {first}) died: killed by SIGKILL; restart 1 in 0.2 s" in said
    assert f"restarted worker-0 as pid {child.process.pid} (restart 1)" in said
    [entry] = read_state(tmp_path)["processes"]  # what `supportflow status` reads from another process
    assert (entry["pid"], entry["restarts"], entry["state"]) == (child.process.pid, 1, "running")


def test_a_crash_loop_backs_off_then_gives_up_loudly(tmp_path, launched, caplog):
    supervisor = Supervisor(tmp_path, max_restarts=3, backoff_min_s=0.1, backoff_max_s=0.4)
    start = launched(CRASHER)
    child = supervisor.add(Child("sink", "sink", start(), launch=start, ready=lambda: False))
    caplog.set_level(logging.INFO, logger="pipelines.devstack.supervisor")

    check_until(supervisor, lambda: child.state == "failed")

    assert child.restarts == 3 and child.last_exit == "exit code 3"
    delays = [r.getMessage().split(" in ")[1].split(" s")[0] for r in caplog.records if "; restart " in r.getMessage()]
    assert delays == ["0.1", "0.2", "0.4"], "a capped exponential backoff"
    [gave_up] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "crashed 4 times in a row" in gave_up.getMessage() and "THE STACK IS DEGRADED" in gave_up.getMessage()
    assert read_state(tmp_path)["processes"][0]["state"] == "failed"
    supervisor.check()
    assert child.restarts == 3, "a failed child stays down"


def test_a_child_that_ran_long_enough_starts_its_backoff_afresh(tmp_path, launched):
    supervisor = Supervisor(tmp_path, max_restarts=1, stable_s=0.5, backoff_min_s=0.1)
    start = launched(SLEEPER)
    child = supervisor.add(Child("senders", "senders", start(), launch=start))
    for _ in range(3):  # more crashes than max_restarts, each after a stable run: never given up
        check_until(supervisor, lambda: child.state == "running")
        stable_at = time.monotonic() + 0.6
        check_until(supervisor, lambda at=stable_at: time.monotonic() > at)
        os.kill(child.process.pid, signal.SIGKILL)
        check_until(supervisor, lambda: child.state == "starting")
    assert child.restarts == 3 and child.state != "failed"


def test_the_embedded_broker_is_watched_not_restarted(tmp_path, caplog):
    supervisor = Supervisor(tmp_path)
    process = spawn(SLEEPER, tmp_path / "broker.log")
    child = supervisor.add(Child("broker", "broker", process))
    caplog.set_level(logging.ERROR, logger="pipelines.devstack.supervisor")
    process.kill()
    check_until(supervisor, lambda: child.state == "failed")
    assert "a new one would be empty" in caplog.text and child.restarts == 0


def test_a_dead_childs_helpers_in_its_process_group_go_with_it(tmp_path, launched):
    """Triton's backend stubs and postgres's backends outlive a SIGKILLed parent unless their group goes."""
    grandchild_pid = tmp_path / "grandchild.pid"
    parent = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(grandchild_pid)!r}, 'w').write(str(p.pid)); time.sleep(60)",
    ]
    supervisor = Supervisor(tmp_path, backoff_min_s=5)
    start = launched(parent)
    child = supervisor.add(Child("triton", "triton", start(), launch=start))
    check_until(supervisor, lambda: grandchild_pid.exists() and grandchild_pid.read_text() != "")
    helper = int(grandchild_pid.read_text())
    os.kill(child.process.pid, signal.SIGKILL)
    check_until(supervisor, lambda: child.state == "restarting")
    deadline = time.monotonic() + 5
    while Path(f"/proc/{helper}").exists() and "State:\tZ" not in Path(f"/proc/{helper}/status").read_text():
        assert time.monotonic() < deadline, "the dead child's helper is still running"
        time.sleep(0.05)


def test_exits_are_described_as_a_person_reads_them():
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"
