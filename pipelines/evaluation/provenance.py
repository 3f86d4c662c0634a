"""What a saved figure was measured on: the commit of this checkout and whether its tree was dirty."""

from __future__ import annotations

import subprocess
from typing import Any

from pipelines.runtime.settings import PROJECT_DIR

__all__ = ["git", "source_state"]


def git(*args: str) -> str:
    """`git ARGS` in the project's checkout; "" where git or the checkout is missing (an installed wheel)."""
    try:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def source_state() -> dict[str, Any]:
    """`{"commit": sha, "dirty": bool}`; untracked files (outputs, caches) do not make the tree dirty."""
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
