"""The workers' knowledge client on a real PostgreSQL with pgvector and the real embedder: an empty knowledge
base is reported, and an ingest that finishes after the worker started is answered from without a restart."""

from __future__ import annotations

import pytest

from connectors.knowledge.sources.folder import FolderSource
from pipelines.knowledge.ingest import default_chunker, ingest
from pipelines.runtime.knowledge import KnowledgeUnavailable, StoreRetriever
from tests.support.knowledge import write_files

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
