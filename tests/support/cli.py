"""Running `supportflow` commands as the user does: a child process with a clean SUPPORTFLOW_ environment."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


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


class RunningStack:
    """`supportflow run` as a child process, its output read line by line so a test waits on events."""

    def __init__(self, data_dir: Path, env: dict[str, str], ignore_sigint: bool = False) -> None:
        import threading

        child_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
        child_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        child_env.update(
            SUPPORTFLOW_DATA_DIR=str(data_dir),
            SUPPORTFLOW_HTTP_PORT="0",
            SUPPORTFLOW_WORKSPACE_PORT="0",
            SUPPORTFLOW_SMTP_LISTEN_PORT="0",
            **env,
        )
        self.env = child_env
        self.data_dir = data_dir
        self.lines: list[str] = []
        self.ended = False
        self._new_line = threading.Condition()
        # a shell's background job starts with SIGINT ignored; Python then keeps it ignored
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run"],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=ignore,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self.ended = True
            self._new_line.notify_all()

    def wait_for(self, text: str, timeout_s: float = 180.0, after: int = 0) -> str:
        """The first output line (from line `after` on) holding `text`; fails if the process ends first."""
        deadline = time.monotonic() + timeout_s
        with self._new_line:
            while True:
                for line in self.lines[after:]:
                    if text in line:
                        return line
                assert not self.ended, (
                    f"`supportflow run` ended ({self.process.returncode}) before {text!r}:\n" + self.output()[-3000:]
                )
                left = deadline - time.monotonic()
                assert left > 0, f"no {text!r} within {timeout_s:.0f}s:\n" + self.output()[-3000:]
                self._new_line.wait(timeout=min(left, 1.0))

    def output(self) -> str:
        return "\n".join(self.lines)

    def started_pids(self) -> dict[str, int]:
        """Each child the supervisor logged as started (the latest pid of each name)."""
        found = {}
        for line in self.lines:
            match = re.search(r"(?:started|restarted) (\S+) (?:\(pid |as pid )(\d+)", line)
            if match:
                found[match.group(1)] = int(match.group(2))
        return found

    def status(self) -> dict[str, Any]:
        shown = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "status", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode in (0, 3), shown.stdout + shown.stderr
        return json.loads(shown.stdout)

    def interrupt(self, timeout_s: float = 60.0) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
