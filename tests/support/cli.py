"""Running `supportflow` commands as the user does: a child process with a clean SUPPORTFLOW_ environment."""

from __future__ import annotations

import os
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
