"""`supportflow ingress`, the production shape: never an open REST API on a network address by default.

Each test runs the real command as a child process against a real tansu broker, listening on
0.0.0.0 as docker-compose.yml makes it do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from pipelines.devstack.embedded import EmbeddedBroker, free_port
from tests.support.cli import clean_env, refused_start

KEY = "sf-compose-key-0123456789abcdef"
BODY = {"channel": "webchat", "sender": "web-1", "text": "where is my order 1234567?"}


def production_env(broker: EmbeddedBroker, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        SUPPORTFLOW_KAFKA_EXACT_OFFSETS="true",
        SUPPORTFLOW_DATA_DIR=str(tmp_path / "data"),
        SUPPORTFLOW_HTTP_HOST="0.0.0.0",
        **extra,
    )


@contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[tuple[str, Path]]:
    """`supportflow ingress` until it answers /healthz: (its URL, its stderr file); stopped afterwards."""
    port = free_port()
    errors = cwd / "ingress.err"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "ingress", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the ingress exited {process.returncode}: {errors.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the ingress did not answer /healthz within 60 s"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, errors
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_production_ingress_on_0_0_0_0_without_keys_refuses_to_start(broker, tmp_path):
    result = refused_start("ingress", "--port", str(free_port()), env=production_env(broker, tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    assert "refusing to serve the REST API on 0.0.0.0 without API keys" in said
    assert "SUPPORTFLOW_API_KEYS" in said and "SUPPORTFLOW_ALLOW_OPEN_API=true" in said, "it names the settings"


def test_with_the_explicit_opt_in_it_starts_open_and_says_so_at_start_and_on_healthz(broker, tmp_path):
    env = production_env(broker, tmp_path, SUPPORTFLOW_ALLOW_OPEN_API="true")
    with serving(env, tmp_path) as (url, errors):
        health = httpx.get(f"{url}/healthz").json()
        accepted = httpx.post(f"{url}/v1/messages", json=BODY)
        said = errors.read_text()
    assert health["status"] == "ok" and "OPEN" in health["warnings"][0], health
    assert accepted.status_code == 202, "open, as the operator asked"
    assert "WARNING: the REST API on 0.0.0.0 is OPEN" in " ".join(said.split()), said


def test_the_compose_shape_reads_its_keys_from_a_docker_secret_and_requires_them(broker, tmp_path):
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "supportflow_api_keys").write_text(f'["{KEY}"]\n')
    env = production_env(broker, tmp_path, SUPPORTFLOW_SECRETS_DIR=str(secrets))
    with serving(env, tmp_path) as (url, _):
        health = httpx.get(f"{url}/healthz").json()
        without = httpx.post(f"{url}/v1/messages", json=BODY)
        keyed = httpx.post(f"{url}/v1/messages", json=BODY, headers={"X-API-Key": KEY})
    assert health == {"status": "ok"}, "no warning: the API is keyed"
    assert (without.status_code, keyed.status_code) == (401, 202)
