"""Where the conversation store lives: `DATABASE_URL`, or the embedded server in the data folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr

from connectors.postgres.embedded import EmbeddedPostgres
from connectors.postgres.store import PostgresStore

__all__ = ["StoreSettings", "database_dsn", "describe_dsn", "open_conversation_store"]


class StoreSettings(Protocol):
    """What locating the store needs of the application's settings (passed in, never imported)."""

    @property
    def database_url(self) -> SecretStr | None: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def database_pool_size(self) -> int: ...


def describe_dsn(dsn: str) -> str:
    """host:port/database of a DSN, without user or password: safe to print."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the configured DATABASE_URL"
    if not parts.scheme:
        return "the configured DATABASE_URL"
    return f"{host}{port}{parts.path or '/'}"


@asynccontextmanager
async def database_dsn(settings: StoreSettings) -> AsyncIterator[str]:
    """The DSN to use for as long as the block runs; an embedded server started here stops at its end."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    server = EmbeddedPostgres(settings.data_dir / "postgres")
    dsn = await asyncio.to_thread(server.start)
    try:
        yield dsn
    finally:
        await asyncio.to_thread(server.stop)


async def open_conversation_store(settings: StoreSettings, migrate: bool = False) -> PostgresStore:
    """A store on `settings.database_url`, or on an embedded server (persistent in data_dir/postgres)
    that lives until the store is closed."""
    if settings.database_url is not None:
        store = PostgresStore(settings.database_url.get_secret_value(), settings.database_pool_size)
    else:
        server = EmbeddedPostgres(settings.data_dir / "postgres")
        store = PostgresStore(await asyncio.to_thread(server.start), settings.database_pool_size)
        store.close_with(server.stop)
    try:
        if migrate:
            await store.migrate()
        else:
            await store.pool()
    except BaseException:
        await store.close()
        raise
    return store
