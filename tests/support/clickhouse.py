"""A real ClickHouse server for the tests, started here from Debian's `clickhouse-server` binary.

Debian bookworm ships 18.16 (2018): the oldest server the events DDL and SQL must run on. The
server gets free ports and a temporary config and data folder, and ends with the test session.
Where no binary exists the tests that need it are skipped, saying how to install it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines.devstack.embedded import free_port, spawn, stop
from tests.support.stream import missing

INSTALL_HINT = "apt-get install clickhouse-server (make test installs it when missing)"

_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{dir}/server.log</log><errorlog>{dir}/server.err.log</errorlog>
        <size>10M</size><count>1</count></logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <user_files_path>{dir}/user_files/</user_files_path>
    <format_schema_path>{dir}/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
"""


def clickhouse_server_argv() -> list[str] | None:
    """How to start a server here: Debian's clickhouse-server (in /usr/sbin), or the single `clickhouse` binary."""
    for candidate in (shutil.which("clickhouse-server"), "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"):
        if candidate and Path(candidate).is_file():
            return [candidate]
    single = shutil.which("clickhouse")
    return [single, "server"] if single else None


class ClickHouseServer:
    """A running server: its native-protocol port, and fresh databases on demand."""

    def __init__(self, tcp_port: int) -> None:
        self.tcp_port = tcp_port

    def url(self, database: str = "default") -> str:
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}/{database}"

    def fresh_database(self) -> str:
        """A new empty database, so tests sharing the server never see each other's rows."""
        from clickhouse_driver import Client

        name = f"t_{uuid.uuid4().hex[:12]}"
        client = Client("127.0.0.1", port=self.tcp_port)
        try:
            client.execute(f"CREATE DATABASE {name}")
        finally:
            client.disconnect()
        return self.url(name)


@contextmanager
def running_clickhouse_server(workdir: Path, argv: list[str], timeout_s: float = 60.0) -> Iterator[ClickHouseServer]:
    """Start a server with its config and data in workdir on free ports; stop it on exit (also used by bench/)."""
    from clickhouse_driver import Client
    from clickhouse_driver.errors import Error as DriverError

    tcp_port, http_port = free_port(), free_port()
    (workdir / "config.xml").write_text(_CONFIG.format(dir=workdir, tcp_port=tcp_port, http_port=http_port))
    (workdir / "users.xml").write_text(_USERS)
    log, errors = workdir / "stdout.log", workdir / "server.err.log"
    process: subprocess.Popen[bytes] = spawn([*argv, f"--config-file={workdir / 'config.xml'}"], log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            client = Client("127.0.0.1", port=tcp_port, connect_timeout=1)
            try:
                client.execute("SELECT 1")
                break
            except (DriverError, OSError, EOFError):
                if process.poll() is not None or time.monotonic() > deadline:
                    detail = errors.read_text() if errors.exists() else ""
                    raise RuntimeError(f"clickhouse-server did not start:\n{log.read_text()}\n{detail}") from None
                time.sleep(0.1)
            finally:
                client.disconnect()
        yield ClickHouseServer(tcp_port)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """One server for the session (it takes a second or two to start)."""
    argv = clickhouse_server_argv()
    if argv is None:
        missing(f"no clickhouse-server binary on this machine: {INSTALL_HINT}")
    with running_clickhouse_server(tmp_path_factory.mktemp("clickhouse"), argv) as server:
        yield server
