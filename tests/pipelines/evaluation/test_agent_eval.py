"""`eval agent` end to end: a few tasks, twice each, through fresh embedded stacks and the real operators."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from pipelines.evaluation.agent_eval import run_agent_eval
from pipelines.runtime.settings import Settings

TASKS = ["track-alice-shipped", "human-1", "cancel-pending-2"]


@pytest.mark.timeout(600)
def test_tasks_run_twice_are_scored_on_the_backend_with_provenance(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, http_port=0, workspace_port=0)

    result = run_agent_eval(settings, trials=2, concurrency=3, console=Console(quiet=True), only=TASKS)

    assert result["tasks"] == 3 and result["conversations"] == 6
    assert set(result["by_task"]) == set(TASKS)
    assert result["wrong_actions"] == 0
    assert 0.0 <= result["pass^2"] <= result["pass^1"] <= 1.0
    # every failure is explained, and every pass was judged on a conversation that happened
    assert all(f["problems"] for f in result["failures"])
    assert result["turns"] >= 6 and result["latency_ms"]["p50"] > 0
    assert len(result["measured_on"]["commit"]) == 40 and result["measured_on"]["trials"] == 2
