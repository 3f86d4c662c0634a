"""The PostgreSQL conversation store: schema migrations, batch upserts, reads for the web pages."""

from __future__ import annotations

from connectors.postgres.connect import database_dsn, describe_dsn, open_conversation_store
from connectors.postgres.embedded import EmbeddedPostgres, EmbeddedPostgresError
from connectors.postgres.errors import is_data_error
from connectors.postgres.migrator import (
    MigrationError,
    MigrationStatus,
    available_migrations,
    migrate,
    migration_status,
)
from connectors.postgres.store import PostgresStore, intent_corrections

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "MigrationError",
    "MigrationStatus",
    "PostgresStore",
    "available_migrations",
    "database_dsn",
    "describe_dsn",
    "intent_corrections",
    "is_data_error",
    "migrate",
    "migration_status",
    "open_conversation_store",
]
