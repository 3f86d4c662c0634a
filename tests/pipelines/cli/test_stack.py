"""`supportflow run` on a network address: refused before anything starts, unless the API is keyed."""

from __future__ import annotations

from pipelines.devstack.embedded import free_port
from tests.support.cli import clean_env, refused_start


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
