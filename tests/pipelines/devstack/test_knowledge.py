"""The help center a benchmark's or an evaluation's stack ingests before its workers answer, as
`supportflow run` does (the real PostgreSQL with pgvector, the real in-process embedder)."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from connectors.knowledge.pgvector import PgVectorStore
from pipelines.devstack.knowledge import ingest_help_center
from pipelines.runtime.settings import PROJECT_DIR, Settings


async def _releases(dsn: str) -> list[str]:
    store = await PgVectorStore.open(dsn)
    try:
        return [r.release_id for r in await store.list_releases()]
    finally:
        await store.close()


async def test_a_stack_with_a_database_gets_the_projects_help_center_once(postgres_dsn, tmp_path):
    settings = Settings(database_url=SecretStr(postgres_dsn), data_dir=tmp_path, triton_url=None)
    assert settings.help_center_dir == PROJECT_DIR / "playbooks" / "help_center"

    first = await asyncio.to_thread(ingest_help_center, settings)
    again = await asyncio.to_thread(ingest_help_center, settings)

    assert first is not None and len(first.added) >= 40, "the demo shop's help center has 40+ articles"
    assert again is None
    assert await _releases(postgres_dsn) == [r.release_id for r in first.releases]


def test_no_database_or_no_help_center_means_nothing_to_ingest(tmp_path):
    assert ingest_help_center(Settings(database_url=None, data_dir=tmp_path)) is None
    no_folder = Settings(database_url=SecretStr("postgresql://sf@127.0.0.1:1/x"), help_center_dir=None)
    assert ingest_help_center(no_folder) is None
