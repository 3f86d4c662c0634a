"""Versioned schema migrations: numbered SQL files applied once, in order, by `supportflow db migrate`.

All pending files run in one transaction under a transaction-level advisory lock, so two
processes migrating at once serialise (the second finds nothing to do) and a failing file
leaves the database as it was. Each applied file's SHA-256 is recorded: editing a file after
it was applied is reported instead of silently ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

__all__ = ["Migration", "MigrationError", "MigrationStatus", "available_migrations", "migrate", "migration_status"]

# an arbitrary constant that names "supportflow schema migration" among advisory locks
LOCK_KEY = 0x5F_10_0D_B0

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The database's migrations do not match the files shipped with this version."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[str]
    pending: list[str]
    changed: list[str]


def available_migrations() -> list[Migration]:
    """The SQL files of `migrations/`, ordered by their numeric prefix."""
    folder = resources.files("connectors.postgres") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


async def _applied(conn: asyncpg.Connection) -> dict[str, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return {row["version"]: row["checksum"] for row in rows}


def _compare(applied: dict[str, str], available: list[Migration]) -> MigrationStatus:
    known = {m.version: m for m in available}
    return MigrationStatus(
        applied=sorted(applied),
        pending=[m.version for m in available if m.version not in applied],
        changed=sorted(v for v, checksum in applied.items() if v in known and known[v].checksum != checksum),
    )


async def migration_status(conn: asyncpg.Connection, available: list[Migration] | None = None) -> MigrationStatus:
    """Which migrations the database has, which it lacks, and which files changed since."""
    return _compare(await _applied(conn), available if available is not None else available_migrations())


async def migrate(conn: asyncpg.Connection, available: list[Migration] | None = None) -> list[str]:
    """Apply every pending migration in order; returns the versions applied (empty: up to date)."""
    migrations = available if available is not None else available_migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        status = _compare(await _applied(conn), migrations)
        if status.changed:
            raise MigrationError(f"migration file(s) changed after they were applied: {', '.join(status.changed)}")
        done: list[str] = []
        for migration in migrations:
            if migration.version not in status.pending:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                migration.version,
                migration.checksum,
            )
            done.append(migration.version)
        return done
