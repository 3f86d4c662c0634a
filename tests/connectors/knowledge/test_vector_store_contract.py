"""The `VectorStore` contract, run against every implementation: pgvector always, Weaviate when a
server is given (`WEAVIATE_URL`), skipped visibly otherwise."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.knowledge.chunking import chunk_document, contextual_text
from connectors.knowledge.protocols import SearchFilters, VectorStore
from connectors.knowledge.sources.base import content_hash
from schemas.knowledge import KnowledgeDocument
from tests.support.knowledge import CountingEmbedder

NO_WEAVIATE = "no Weaviate server can run on these machines; set WEAVIATE_URL"


def document(doc_id: str, title: str, body: str, domain: str = "general") -> KnowledgeDocument:
    return KnowledgeDocument(
        doc_id=doc_id,
        title=title,
        body=body,
        domain=domain,
        source="test",
        content_hash=content_hash(title, body, None, None),
    )


REFUNDS = document(
    "refunds.md",
    "Refunds",
    "# Refunds\n\nYou can get your money back within 30 days of delivery. Refunds go to the original card.",
    domain="billing",
)
SHIPPING = document(
    "shipping.md",
    "Shipping times",
    "# Shipping\n\nParcels arrive in three to five working days. Express delivery takes one day.",
    domain="logistics",
)
PASSWORD = document(
    "password.md",
    "Resetting your password",
    "# Password\n\nTo reset a forgotten password, click 'Forgot password' on the sign-in page.",
)


@pytest.fixture(params=["pgvector", "weaviate"])
async def store(
    request: pytest.FixtureRequest, postgres_dsn: str, embedder: CountingEmbedder
) -> AsyncIterator[tuple[Any, str]]:
    index = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "pgvector":
        from connectors.knowledge.pgvector import PgVectorStore

        pg = await PgVectorStore.open(postgres_dsn)
        await pg.ensure_index(index, embedder.model_id, embedder.dimension)
        try:
            yield pg, index
        finally:
            await pg.close()
        return
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        pytest.skip(NO_WEAVIATE)
    from connectors.knowledge.weaviate import WeaviateStore

    wv = await WeaviateStore.connect(url, grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")))
    await wv.ensure_index(index, embedder.model_id, embedder.dimension)
    try:
        yield wv, index
    finally:
        await wv.drop_index(index)
        await wv.close()


async def put(store: VectorStore, index: str, embedder: CountingEmbedder, *docs: KnowledgeDocument) -> None:
    chunks = [chunk for doc in docs for chunk in chunk_document(doc)]
    vectors = embedder.embed_passages([contextual_text(c) for c in chunks])
    await store.upsert(index, chunks, vectors)


async def test_a_question_finds_the_chunk_that_answers_it_by_meaning(store, embedder):
    vs, index = store
    await put(vs, index, embedder, REFUNDS, SHIPPING, PASSWORD)
    (query,) = embedder.embed_queries(["I want my money returned"])
    found = await vs.dense_search(index, query, 2)
    assert found[0].doc_id == "refunds.md"
    assert 0.0 < found[0].scores["dense"] <= 1.0 and found[0].score == found[0].scores["dense"]
    assert found[0].title == "Refunds" and found[0].domain == "billing"


async def test_a_word_finds_its_chunk_by_full_text(store, embedder):
    vs, index = store
    await put(vs, index, embedder, REFUNDS, SHIPPING, PASSWORD)
    found = await vs.lexical_search(index, "how long does express delivery take", 3)
    assert found and found[0].doc_id == "shipping.md"
    assert found[0].scores["lexical"] > 0


async def test_upserting_the_same_chunks_twice_keeps_one_copy(store, embedder):
    vs, index = store
    await put(vs, index, embedder, REFUNDS, SHIPPING)
    await put(vs, index, embedder, REFUNDS, SHIPPING)
    (query,) = embedder.embed_queries(["refund"])
    found = await vs.dense_search(index, query, 10)
    ids = [p.chunk_id for p in found]
    assert len(ids) == len(set(ids)) == 2


async def test_a_deleted_document_is_found_no_more(store, embedder):
    vs, index = store
    await put(vs, index, embedder, REFUNDS, SHIPPING)
    assert await vs.delete_document(index, "refunds.md") >= 1
    (query,) = embedder.embed_queries(["money back"])
    assert {p.doc_id for p in await vs.dense_search(index, query, 10)} == {"shipping.md"}
    assert await vs.lexical_search(index, "refunds", 10) == []


async def test_domains_scope_what_a_search_returns(store, embedder):
    vs, index = store
    await put(vs, index, embedder, REFUNDS, SHIPPING, PASSWORD)
    (query,) = embedder.embed_queries(["money back"])
    only = SearchFilters(domains=("logistics",))
    assert {p.doc_id for p in await vs.dense_search(index, query, 10, only)} == {"shipping.md"}
    assert {p.doc_id for p in await vs.lexical_search(index, "refunds delivery", 10, only)} == {"shipping.md"}


async def test_a_new_version_of_a_document_replaces_the_old_in_search(store, embedder):
    vs, index = store
    await put(vs, index, embedder, REFUNDS)
    edited = document(REFUNDS.doc_id, "Refunds", "# Refunds\n\nRefunds are paid as store credit only.", "billing")
    await put(vs, index, embedder, edited)
    # the chunk keeps its section's heading line (the real chunker's text)
    assert [p.text for p in await vs.lexical_search(index, "store credit", 5)] == [
        "# Refunds\n\nRefunds are paid as store credit only."
    ]
    assert await vs.lexical_search(index, "original card", 5) == []
