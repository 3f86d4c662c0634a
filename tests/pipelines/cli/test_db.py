"""`supportflow db migrate` and `db status` against a real PostgreSQL, and their errors."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.devstack.embedded import free_port
from pipelines.runtime.settings import PROJECT_DIR

runner = CliRunner()


def test_migrate_twice_applies_then_says_up_to_date(postgres_dsn):
    env = {"DATABASE_URL": postgres_dsn}
    status = runner.invoke(app, ["db", "status"], env=env)
    assert status.exit_code == 0, status.output
    assert "pending  0001_initial" in status.output and "pending  0002_commerce" in status.output

    first = runner.invoke(app, ["db", "migrate"], env=env)
    assert first.exit_code == 0, first.output
    applied = " ".join(first.output.split())  # rich wraps long lines at the terminal's width
    assert (
        "applied 12 migration(s): 0001_initial, 0002_commerce, 0003_outbox, 0004_outbox_email, 0005_feedback, "
        "0006_voice_and_delivery, 0007_identity_lockout, 0008_refund_policy, 0009_exchanges, 0010_knowledge, "
        "0011_knowledge_uses, 0012_kb_usage_prior" in applied
    )

    second = runner.invoke(app, ["db", "migrate"], env=env)
    assert second.exit_code == 0, second.output
    assert "up to date" in second.output and "applied 6" not in second.output

    status = runner.invoke(app, ["db", "status"], env=env)
    assert "applied  0001_initial" in status.output and "applied  0002_commerce" in status.output
    assert "0 pending" in status.output


def test_an_unreachable_server_is_a_clear_error_without_traceback():
    url = f"postgresql://sf:s3cret@127.0.0.1:{free_port()}/supportflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    env.update({"DATABASE_URL": url, "PYTHONPATH": str(PROJECT_DIR)})
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "db", "migrate"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "cannot use PostgreSQL at 127.0.0.1:" in output
    assert "Traceback" not in output and "s3cret" not in output
