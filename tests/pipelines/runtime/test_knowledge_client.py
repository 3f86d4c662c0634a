"""The workers' knowledge client on a real PostgreSQL with pgvector and the real embedder: an empty knowledge
base is reported, and an ingest that finishes after the worker started is answered from without a restart."""

from __future__ import annotations

import pytest

from connectors.knowledge.sources.folder import FolderSource
from pipelines.knowledge.ingest import default_chunker, ingest
from pipelines.runtime.knowledge import KnowledgeUnavailable, StoreRetriever
from tests.support.knowledge import REFUND_ARTICLES, write_files

ARTICLE = """---
title: Gift cards
url: https://help.example.com/gift-cards
---
A gift card never expires. You can use up to three gift cards on one order and pay the rest by card.
"""


async def test_an_empty_base_is_unavailable_until_an_ingest_makes_an_index_live(
    kb_store, postgres_dsn, embedder, tmp_path
):
    client = StoreRetriever(postgres_dsn, embedder)
    try:
        with pytest.raises(KnowledgeUnavailable, match="nothing was ingested"):
            await client.retrieve("do gift cards expire?")

        folder = write_files(tmp_path / "help", {"gift-cards.md": ARTICLE})
        await ingest(FolderSource(folder, domain="support"), "support", embedder, default_chunker, kb_store)
        found = await client.retrieve("do gift cards expire?")

        assert found.passages[0].doc_id == "gift-cards.md" and found.passages[0].title == "Gift cards"
        closeness = await client.similarities("do gift cards expire?", ["A gift card never expires.", "Socks."])
        assert closeness[0] > closeness[1]
    finally:
        await client.close()


async def test_a_worker_with_a_prior_weight_follows_an_imported_usage_prior_without_a_restart(
    kb_store, postgres_dsn, embedder, tmp_path
):
    from pydantic import SecretStr

    from operators.protocols import KnowledgeOptions
    from pipelines.runtime.clients import RuntimeClients
    from pipelines.runtime.settings import Settings

    folder = write_files(tmp_path / "help", REFUND_ARTICLES)
    await ingest(FolderSource(folder, domain="support"), "support", embedder, default_chunker, kb_store)
    settings = Settings(database_url=SecretStr(postgres_dsn), triton_url=None, knowledge_prior_weight=2.0)
    clients = RuntimeClients(settings)
    worker = clients.knowledge_retriever(KnowledgeOptions())
    assert worker is not None and worker.fusion.weights["prior"] == 2.0
    worker.refresh_s = 0.0  # the test's writes are seen on the next question
    question = "how long until my refund shows up"
    try:
        plain = (await worker.retrieve(question)).passages[0].doc_id
        needed = "paypal.md" if plain == "card.md" else "card.md"
        await kb_store.set_usage_prior({needed: 6, plain: 1})
        assert (await worker.retrieve(question)).passages[0].doc_id == needed
        await kb_store.set_usage_prior({})
        assert (await worker.retrieve(question)).passages[0].doc_id == plain
    finally:
        await worker.close()
