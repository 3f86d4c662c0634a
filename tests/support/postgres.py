"""PostgreSQL for the tests: one real server per session, one fresh empty database per test.

The server is the embedded one (started here, in a temporary folder, without fsync), or the
server at `DATABASE_URL` when that is set; either way each test gets its own database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from connectors.postgres import EmbeddedPostgres


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A DSN of a server the tests may create databases on.

    Its folder is not under pytest's tmp_path: pytest keeps only the last few base folders, so
    another pytest run on the machine could delete it, and PostgreSQL shuts down when its
    lock file disappears.
    """
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="supportflow-test-pg-"))
    server = EmbeddedPostgres(folder / "data", durable=False)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A DSN of a new, empty database, dropped after the test."""
    name = f"sf_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_server, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(postgres_server, name)
    finally:
        asyncio.run(_admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate_and_seed(dsn: str) -> None:
    import asyncpg

    from connectors.backends.commerce.seed import seed_commerce
    from connectors.postgres.migrator import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await seed_commerce(conn, customers=20, orders=60, seed=7)
    finally:
        await conn.close()


@pytest.fixture
def commerce_dsn(postgres_dsn: str) -> str:
    """A fresh database with the migrations applied and a small demo shop (the well-known customers)."""
    asyncio.run(_migrate_and_seed(postgres_dsn))
    return postgres_dsn


@pytest.fixture
async def commerce_pool(commerce_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on `commerce_dsn`, as the tool registry makes one (UTC timestamps)."""
    pool = await asyncpg.create_pool(commerce_dsn, min_size=1, max_size=8, server_settings={"timezone": "UTC"})
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def stoppable_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A server of the test's own, on a fixed port, that the test may stop and start again (an outage)."""
    server = EmbeddedPostgres(tmp_path / "pg-data", durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
