"""Shared fixtures: every Kafka test runs against a real tansu broker started here."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipelines.devstack.embedded import EmbeddedBroker, free_port, spawn, stop
from tests.support.stream import WorkerPool

# pytest-xdist gives its workers COLUMNS=80; rich would fix the CLI's table width at import from it,
# where a user's shell (and a serial run) sizes tables when they print.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)

pytest_plugins = [
    "tests.support.browser",
    "tests.support.clickhouse",
    "tests.support.hostile_llm",
    "tests.support.knowledge",
    "tests.support.llm",
    "tests.support.postgres",
    "tests.support.triton",
]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh in-memory tansu broker per test, so tests never see each other's records."""
    with EmbeddedBroker(log_file=tmp_path / "tansu.log") as started:
        yield started


@pytest.fixture
def workers(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[WorkerPool]:
    pool = WorkerPool(broker.bootstrap, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port (Debian's package; `.ci/run` installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server` (.ci/run does)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    process: subprocess.Popen[bytes] = spawn(argv, workdir / "redis.log")
    deadline = time.monotonic() + 10
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, (workdir / "redis.log").read_text()
            time.sleep(0.05)
    client.close()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)
