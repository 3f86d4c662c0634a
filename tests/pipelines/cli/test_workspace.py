"""`supportflow workspace` on a network address: only with the operator's own agents file."""

from __future__ import annotations

from pipelines.devstack.embedded import free_port
from tests.support.cli import clean_env, refused_start
from tests.support.stream import WorkerPool


def test_a_workspace_on_0_0_0_0_with_the_generated_demo_team_refuses_to_start(broker, tmp_path):
    WorkerPool(broker.bootstrap, tmp_path).ensure_topics()  # everything it needs to start is there
    env = clean_env(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        SUPPORTFLOW_KAFKA_EXACT_OFFSETS="true",
        SUPPORTFLOW_DATA_DIR=str(tmp_path / "data"),
        SUPPORTFLOW_WORKSPACE_HOST="0.0.0.0",
    )
    result = refused_start("workspace", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    assert "refusing to serve the agent workspace on 0.0.0.0 with the generated demo team" in said
    assert "SUPPORTFLOW_WORKSPACE_AGENTS_FILE" in said
    assert not (tmp_path / "data" / "workspace-agents.yaml").exists(), "no demo passwords were made or printed"
