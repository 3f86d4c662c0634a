"""Running `supportflow` commands as the user does: a child process with a clean SUPPORTFLOW_ environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def replay(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "replay", *args],
        env=child_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without supportflow's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(extra)
    return env


def refused_start(
    *args: str, env: dict[str, str], cwd: Path, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `supportflow ARGS`, expecting it to exit by itself; one still running at `timeout_s` started
    where it should have refused: it is stopped (its whole process group) and AssertionError raised."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"`supportflow {' '.join(args)}` started instead of refusing:\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
