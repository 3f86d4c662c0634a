"""The `supportflow` command line: configuration, schemas, and the one-command stack."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.devstack.embedded import free_port
from schemas import record_types

runner = CliRunner()


def clean_env(**extra: str) -> dict[str, str]:
    """The user's environment without supportflow's settings; every listener on a free port, since
    other tests' stacks run at the same time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(SUPPORTFLOW_WORKSPACE_PORT="0", SUPPORTFLOW_SMTP_LISTEN_PORT="0")
    env.update(extra)
    return env


def test_config_show_masks_secrets(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("SUPPORTFLOW_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("SUPPORTFLOW_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("SUPPORTFLOW_REDIS_URL", "redis://:s3cret@cache:6379/0")
    monkeypatch.setenv("SUPPORTFLOW_RATE_LIMITS", '{"sms": {"requests": 5, "per_seconds": 60}}')
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["redis_url"] == "redis://**********@cache:6379/0" and "s3cret" not in result.output
    assert shown["rate_limits"] == {"sms": {"requests": 5, "per_seconds": 60.0}}
    assert shown["kafka_bootstrap_servers"] == "kafka-1:9092,kafka-2:9092"
    assert shown["kafka_sasl_password"] == "**********" and "hunter2" not in result.output


def test_config_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    config = tmp_path / "supportflow.yaml"
    config.write_text("http_port: 9001\nworkers: 3\n")
    monkeypatch.setenv("SUPPORTFLOW_WORKERS", "2")
    result = runner.invoke(app, ["--config", str(config), "config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["http_port"], shown["workers"]) == (9001, 2)
    assert shown["config_file"] == str(config)


def test_bad_configuration_is_a_clear_error_with_exit_code_2(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "no-port-here")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2 and "expected host:port" in result.output
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")

    config = tmp_path / "bad.yaml"
    config.write_text("http_prot: 9001\n")
    result = runner.invoke(app, ["--config", str(config), "config", "show"])
    assert result.exit_code == 2 and "http_prot" in result.output

    result = runner.invoke(app, ["--config", str(tmp_path / "missing.yaml"), "config", "show"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_schemas_export_writes_a_json_schema_per_record(tmp_path):
    result = runner.invoke(app, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {p.name.removesuffix(".schema.json") for p in tmp_path.glob("*.schema.json")}
    assert written == set(record_types())
    event = json.loads((tmp_path / "ConversationEvent.schema.json").read_text())
    assert event["$id"] == "supportflow/ConversationEvent/v1"
    assert {"event_type", "conversation_id", "message", "nlu", "action", "response", "metadata"} <= set(
        event["properties"]
    )


def test_worker_and_ingress_refuse_to_start_without_a_broker_address():
    for command in ("worker", "ingress"):
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", command],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in result.stderr, command


def test_help_explains_every_command():
    result = runner.invoke(app, ["--help"])
    for command in ("run", "worker", "ingress", "chat", "demo", "bench", "topology", "schemas", "config"):
        assert command in result.output


def test_demo_plays_the_script_and_prints_a_json_summary(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--json"],
        env=clean_env(SUPPORTFLOW_DATA_DIR=str(tmp_path), SUPPORTFLOW_HTTP_PORT="0"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["sent"] == 12 and summary["unanswered"] == 0
    assert summary["replied"] >= 5 and summary["escalated"] >= 3
    assert summary["replied"] + summary["escalated"] == 11 and summary["dead_lettered"] == 1
    assert 0 < summary["latency_ms_p50"] <= summary["latency_ms_p99"]


def wait_until_healthy(process: subprocess.Popen, port: int, timeout_s: float = 120, log: Path | None = None) -> None:
    """Until the HTTP ingress the process serves answers /healthz; fail if the process dies first (with the end
    of its `log`, when it writes one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            said = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"exited with {process.returncode} before serving:\n{said}")
        assert time.monotonic() < deadline, f"nothing answered on port {port} within {timeout_s:.0f}s"
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.3)


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its new parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        children = {int(c) for c in out}
        found |= children
        frontier.extend(children)
    return found


def test_run_serves_chat_and_ctrl_c_leaves_no_process_behind(tmp_path):
    port = free_port()
    env = clean_env(SUPPORTFLOW_DATA_DIR=str(tmp_path), SUPPORTFLOW_HTTP_PORT=str(port),
                    SUPPORTFLOW_WORKSPACE_PORT="0", SUPPORTFLOW_SMTP_LISTEN_PORT="0")  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_healthy(process, port)
        children = descendants(process.pid)
        assert len(children) >= 2, "a broker and a worker run as children"

        said = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "chat",
                "--say",
                "where is my order 1234567?",
                "--customer",
                "cli-1",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert said.returncode == 0, said.stdout + said.stderr
        assert "1234567" in said.stdout

        chatted = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "chat", "--customer", "cli-2", "--channel", "sms"],
            env=env,
            input="how do I get a refund?\n\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert chatted.returncode == 0, chatted.stdout + chatted.stderr
        assert f"via http://127.0.0.1:{port}" in chatted.stdout, "chat found the running stack"
        assert "agent>" in chatted.stdout and "refund" in chatted.stdout.split("agent>", 1)[1].lower()

        # the sink stores both turns in chdb while the stack runs, and the report reads the same folder
        deadline = time.monotonic() + 60
        while True:
            report = subprocess.run(
                [sys.executable, "-m", "pipelines.cli", "analytics", "report", "--since", "1h", "--json", "--no-png"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert report.returncode == 0, report.stdout + report.stderr
            if json.loads(report.stdout)["turns"] >= 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert json.loads(report.stdout)["turns"] == 2
        assert {c["channel"] for c in json.loads(report.stdout)["volume_by_channel"]} == {"webchat", "sms"}
        served_by = {m["model_used"]: m["turns"] for m in json.loads(report.stdout)["turns_by_model"]}
        assert served_by == {"triton:intent_classifier:1": 2}, "the embedded tritonserver understood both turns"

        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output[-2000:]
        assert "supportflow is running" in output and "stopped." in output
        assert "NLU model served by the embedded tritonserver" in output
        assert "/workspace  (human agents" in output and "demo team written to" in output, "where agents sign in"
        assert (tmp_path / "workspace-agents.yaml").exists()
        email = re.search(
            r"email +smtp://127\.0\.0\.1:(\d+) for support@example\.com; replies go to the outbox", output
        )
        assert email and int(email.group(1)) > 0, "the email channel's listener, on a free port (0)"
        time.sleep(0.5)
        alive = [pid for pid in children if running(pid)]
        assert not alive, f"left behind: {alive}"
    finally:
        if process.poll() is None:
            process.kill()


def test_ingress_command_publishes_to_a_configured_cluster(broker, tmp_path):
    from tests.support.stream import read_topics

    port = free_port()
    env = clean_env(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, SUPPORTFLOW_HTTP_PORT=str(port))
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ingress"], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_until_healthy(process, port)
        body = {"channel": "email", "sender": "ana@example.com", "text": "where is my invoice?"}
        message_id = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body).json()["message_id"]
        records = read_topics(broker.bootstrap, ["sf.ingress"], until=lambda rs: len(rs) >= 1, timeout_s=20)
        [record] = records
        assert record.key == b"email:ana@example.com"
        assert json.loads(record.value)["message_id"] == message_id
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_bench_explains_its_phases_and_refuses_an_outside_cluster(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "bench", "--help"],
        env=clean_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0
    assert "--drift-messages" in shown.stdout and "--profile" in shown.stdout and "bare intent model" in shown.stdout

    refused = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "bench", "--messages", "10", "--out", str(tmp_path / "r.json")],
        env=clean_env(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", SUPPORTFLOW_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and not (tmp_path / "r.json").exists()


def left_behind(data_dir: Path) -> list[str]:
    """Processes of a stack that should be gone: any naming its data dir, and orphaned brokers.

    A broker has no data dir on its command line; one whose parent died was re-parented to init,
    while the brokers of other tests running at the same time still have theirs.
    """
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout.splitlines()
    found = []
    for line in table:
        pid, ppid, args = line.split(None, 2)
        if str(data_dir) in args or ("tansu" in args and ppid == "1"):
            found.append(f"{pid} {args[:120]}")
    return found


def test_chat_starts_the_embedded_stack_when_none_is_running(tmp_path):
    env = clean_env(SUPPORTFLOW_DATA_DIR=str(tmp_path), SUPPORTFLOW_HTTP_PORT="0")
    said = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "chat", "--say", "I want to talk to a human", "--customer", "solo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert said.returncode == 0, said.stdout + said.stderr
    assert "handed to a human agent: customer_requested_human" in said.stdout
    assert not (tmp_path / "stack.json").exists(), "the stack it started is gone again"
    assert not left_behind(tmp_path), f"left behind: {left_behind(tmp_path)}"


def test_children_die_with_run_even_when_it_is_killed(tmp_path):
    port = free_port()
    # every port its own: another test's stack may hold the defaults (8081, 2525) on this machine
    env = clean_env(SUPPORTFLOW_DATA_DIR=str(tmp_path), SUPPORTFLOW_HTTP_PORT=str(port),
                    SUPPORTFLOW_WORKSPACE_PORT="0", SUPPORTFLOW_SMTP_LISTEN_PORT="0")  # fmt: skip
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run"], env=env, stdout=out, stderr=out)
    wait_until_healthy(process, port, log=log)
    children = descendants(process.pid)
    assert len(children) >= 2
    process.kill()
    process.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in children if running(pid)]
    assert not alive, f"left behind after SIGKILL: {alive}"
