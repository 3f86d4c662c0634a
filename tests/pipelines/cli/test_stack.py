"""`supportflow run` as an operator meets it: refused on a network address unless the API is keyed;
children that crash come back and `status` shows it; Ctrl-C stops a start-up at any moment without
leaving a process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.devstack.embedded import free_port
from tests.support.cli import RunningStack, clean_env, refused_start


def test_run_on_0_0_0_0_without_keys_refuses_before_starting_anything(tmp_path):
    env = clean_env(
        SUPPORTFLOW_DATA_DIR=str(tmp_path / "data"),
        SUPPORTFLOW_HTTP_HOST="0.0.0.0",
        SUPPORTFLOW_HTTP_PORT=str(free_port()),
        SUPPORTFLOW_WORKSPACE_PORT="0",
        SUPPORTFLOW_SMTP_LISTEN_PORT="0",
    )
    result = refused_start("run", "--workers", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "SUPPORTFLOW_API_KEYS" in " ".join(result.stderr.split())
    assert not (tmp_path / "data").exists(), "no broker, store or worker was started"


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (process group, state letter) of every process on the machine."""
    rows = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout.splitlines()
    return {int(pid): (int(pgid), stat) for pid, pgid, stat in (row.split() for row in rows)}


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        out = subprocess.run(["pgrep", "-P", str(frontier.pop())], capture_output=True, text=True).stdout.split()
        children = {int(c) for c in out} - found
        found |= children
        frontier.extend(children)
    return found


def left_behind(pids: set[int], groups: set[int]) -> list[int]:
    """Live (not zombie) processes among `pids` or in one of `groups` (a child's own helpers)."""
    return [
        pid
        for pid, (pgid, stat) in process_table().items()
        if (pid in pids or pgid in groups) and not stat.startswith("Z")
    ]


@pytest.mark.parametrize(
    ("moment", "ignore_sigint"),
    [
        ("starting tritonserver", False),  # the broker is up, Triton loading its models
        ("starting PostgreSQL", False),  # Triton up, PostgreSQL initialising or starting
        ("started worker-0", False),  # workers warming up (models, group join)
        ("started worker-0", True),  # the same, started as a shell's background job: SIGINT inherited ignored
    ],
)
def test_ctrl_c_during_start_up_stops_what_started_and_leaves_nothing(tmp_path, moment, ignore_sigint):
    stack = RunningStack(tmp_path, {}, ignore_sigint=ignore_sigint)
    try:
        stack.wait_for(moment)
        children = descendants(stack.process.pid) | set(stack.started_pids().values())
        table = process_table()
        # a child's own helpers are in a group the child leads; another group (the suite's shared
        # PostgreSQL, a parallel test's stack) is not this stack's to clean up
        groups = {table[pid][0] for pid in children if pid in table and table[pid][0] in children}
        assert children, "something had started"
        sent = time.monotonic()
        code = stack.interrupt(timeout_s=90)
        took = time.monotonic() - sent
    finally:
        stack.kill()
    assert code in (0, 130), stack.output()[-3000:]
    assert took < 60, f"took {took:.0f}s to stop"
    assert "supportflow is running" not in stack.output(), "it went on starting after Ctrl-C"
    deadline = time.monotonic() + 10
    while left_behind(children, groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left_behind(children, groups), f"left behind: {left_behind(children, groups)}"
    assert not (tmp_path / "run" / "processes.json").exists(), "status would show a stack that is gone"


def test_killed_worker_sink_senders_and_router_come_back_and_the_stack_answers(tmp_path):
    stack = RunningStack(tmp_path, {})
    try:
        stack.wait_for("Ctrl-C stops everything.")
        before = {p["name"]: p for p in stack.status()["processes"]}
        assert {"broker", "worker-0", "sink", "senders", "workspace", "ingress"} <= set(before)
        assert before["worker-0"]["health"] == "ok" and before["workspace"]["health"] == "ok"

        for name in ("worker-0", "sink", "senders", "workspace"):  # the workspace process holds the router
            pid = before[name]["pid"]
            mark = len(stack.lines)
            os.kill(pid, signal.SIGKILL)
            stack.wait_for(f"{name} (pid {pid}) died: killed by SIGKILL; restart 1 in", after=mark)
            stack.wait_for(f"restarted {name} as pid", after=mark)
        deadline = time.monotonic() + 120
        while True:
            after = {p["name"]: p for p in stack.status()["processes"]}
            if all(after[n]["state"] == "running" for n in ("worker-0", "sink", "senders", "workspace")):
                break
            assert time.monotonic() < deadline, after
            time.sleep(1)
        for name in ("worker-0", "sink", "senders", "workspace"):
            assert after[name]["restarts"] == 1 and after[name]["pid"] != before[name]["pid"]
            assert after[name]["last_exit"] == "killed by SIGKILL"
        assert after["worker-0"]["health"] == "ok" and after["workspace"]["health"] == "ok"
        assert all(
            p["restarts"] == 0 for n, p in after.items() if n not in ("worker-0", "sink", "senders", "workspace")
        )

        said = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "chat", "--say", "where is my order 1234567?", "--customer", "k1"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert said.returncode == 0 and "1234567" in said.stdout, said.stdout + said.stderr

        # the restarted sink stores the turn: the analytics report reads what it wrote
        deadline = time.monotonic() + 60
        while True:
            report = subprocess.run(
                [sys.executable, "-m", "pipelines.cli", "analytics", "report", "--since", "1h", "--json", "--no-png"],
                env=stack.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if report.returncode == 0 and json.loads(report.stdout)["turns"] >= 1:
                break
            assert time.monotonic() < deadline, report.stdout + report.stderr
            time.sleep(1)
        groups = {g["group"] for g in stack.status()["consumer_groups"]}
        assert {"supportflow", "supportflow-sink-postgres", "supportflow-senders"} <= groups
        assert stack.interrupt() == 0
    finally:
        stack.kill()


def test_status_says_so_when_no_stack_runs(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    shown = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "status"],
        env={**env, "SUPPORTFLOW_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 1 and "no `supportflow run` is serving" in shown.stderr
