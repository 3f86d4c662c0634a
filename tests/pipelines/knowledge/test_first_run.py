"""The first run's ingest on a real PostgreSQL with pgvector and the real embedder: an empty knowledge base
gets the help center once, and a base with a release is left alone."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import SecretStr

from connectors.knowledge.pgvector import PgVectorStore
from pipelines.cli.stack import _first_run_knowledge
from pipelines.knowledge.first_run import ingest_if_empty
from pipelines.runtime.settings import Settings
from tests.support.knowledge import CountingEmbedder, write_files

ARTICLE = """---
title: Gift cards
url: https://help.example.com/gift-cards
domain: billing
---
A gift card never expires. You can use up to three gift cards on one order and pay the rest by card.
"""


async def test_an_empty_knowledge_base_gets_the_folder_once_and_later_starts_do_nothing(
    postgres_dsn, embedder: CountingEmbedder, tmp_path
):
    folder = write_files(tmp_path / "help", {"promotions/gift-cards.md": ARTICLE})
    built: list[CountingEmbedder] = []

    def make() -> CountingEmbedder:
        built.append(embedder)
        return embedder

    first = await ingest_if_empty(postgres_dsn, folder, make)
    again = await ingest_if_empty(postgres_dsn, folder, make)

    assert first is not None and first.added == ["promotions/gift-cards.md"]
    assert [r.release_id for r in first.releases] == ["billing@1"]
    assert again is None and len(built) == 1, "a base with a release is not read, nor the model loaded"
    store = await PgVectorStore.open(postgres_dsn)
    try:
        assert [r.release_id for r in await store.list_releases()] == ["billing@1"]
        assert (await store.live_index()) is not None
    finally:
        await store.close()


def test_a_configured_database_is_never_filled_by_the_first_run(tmp_path):
    """Only the embedded PostgreSQL is the run's own; DATABASE_URL's is filled with `supportflow kb ingest`."""
    settings = Settings(database_url=SecretStr("postgresql://sf:sf@127.0.0.1:1/theirs"), data_dir=tmp_path)
    updates: list[str] = []
    stack = SimpleNamespace(settings=settings, postgres=None)

    assert _first_run_knowledge(stack, SimpleNamespace(update=updates.append)) == []  # type: ignore[arg-type]
    assert updates == []


def test_the_embedded_stacks_first_start_ingests_with_progress_and_says_so(postgres_dsn, tmp_path):
    folder = write_files(tmp_path / "help", {"promotions/gift-cards.md": ARTICLE})
    settings = Settings(database_url=SecretStr(postgres_dsn), help_center_dir=folder, triton_url=None)
    stack = SimpleNamespace(settings=settings, postgres=object())  # the embedded server is running
    updates: list[str] = []
    status = SimpleNamespace(update=updates.append)

    first = _first_run_knowledge(stack, status)  # type: ignore[arg-type]
    later = _first_run_knowledge(stack, status)  # type: ignore[arg-type]

    assert first == [f"first run: 1 help-center article from {folder} ingested (billing@1)"]
    assert any("ingesting the help center" in u and "1/1" in u for u in updates)
    assert later == ["answers from the knowledge base's live releases (supportflow kb releases)"]
