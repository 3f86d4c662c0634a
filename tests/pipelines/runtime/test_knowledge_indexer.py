"""The `knowledge` stage's writer (`StoreIndexer`) and operator on a real PostgreSQL with the real model: a
document's chunks are embedded in batches, every unit of work is idempotent, a store that is away is
waited for, and a worker without a store dead-letters with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from operators.index_document import IndexDocument, IndexDocumentConfig
from operators.protocols import DictTable, OperatorContext
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.knowledge import StoreIndexer
from schemas.knowledge import KnowledgeDocument, KnowledgeRecord
from tests.support.knowledge import CountingEmbedder


class BatchRecorder(CountingEmbedder):
    """Remembers the size of every call to the model."""

    def __init__(self, inner) -> None:
        super().__init__(inner.inner if isinstance(inner, CountingEmbedder) else inner)
        self.batches: list[int] = []

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(len(texts))
        return super().embed_passages(texts)


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 12, 3, tzinfo=UTC)


def long_document(sections: int = 20) -> KnowledgeDocument:
    body = "\n\n".join(
        f"## Part {n}\n\n" + " ".join(f"Sentence {i} of part {n} says something about topic {n}." for i in range(12))
        for n in range(sections)
    )
    return KnowledgeDocument(
        doc_id="manual.md", title="The manual", body=body, source="test", content_hash="sha256:m1", domain="support"
    )


async def test_a_long_document_is_embedded_in_batches_and_each_unit_of_work_is_idempotent(postgres_dsn, embedder):
    recorder = BatchRecorder(embedder)
    indexer = StoreIndexer(postgres_dsn, recorder, max_batch=8)
    try:
        added = await indexer.apply_document(long_document())
        assert added.action == "added" and added.chunks >= 17 and added.embedded == added.chunks
        assert sum(recorder.batches) == added.chunks and max(recorder.batches) == 8, recorder.batches

        again = await indexer.apply_document(long_document())
        assert (again.action, again.embedded) == ("unchanged", 0)
        assert sum(recorder.batches) == added.chunks, "nothing embedded twice"

        first = await indexer.publish_release("support", note="stream")
        assert (first.release_id, first.created) == ("support@1", True)
        assert (await indexer.publish_release("support")).created is False
        store = await indexer.store()
        assert (await store.live_index()).name == indexer.index == recorder.model_id

        gone = await indexer.apply_tombstone("manual.md")
        assert (gone.action, gone.chunks) == ("deleted", added.chunks)
        assert (await indexer.apply_tombstone("manual.md")).action == "absent"
    finally:
        await indexer.close()


async def test_a_store_that_is_away_is_waited_for(stoppable_postgres, embedder):
    dsn = stoppable_postgres.start()
    stoppable_postgres.stop()
    indexer = StoreIndexer(dsn, embedder, retry_max_s=0.5)
    try:
        task = asyncio.create_task(indexer.apply_document(long_document(3)))
        await asyncio.sleep(2)
        assert not task.done(), "retried while the store is away, not failed"
        await asyncio.to_thread(stoppable_postgres.start)
        result = await asyncio.wait_for(task, 60)
        assert result.action == "added"
    finally:
        await indexer.close()


async def test_the_operator_reports_what_it_applied_and_without_a_store_raises_the_reason(postgres_dsn):
    from pydantic import SecretStr

    from pipelines.runtime.settings import Settings

    operator = IndexDocument(IndexDocumentConfig(max_batch=16))
    without_store = RuntimeClients(Settings(database_url=None))
    bare = OperatorContext(tables={"x": DictTable()}, clock=FixedClock(), clients=without_store)
    operator.warm_up(bare)
    record = KnowledgeRecord.of(long_document(2), publish_id="p-1")
    with pytest.raises(RuntimeError, match=r"cannot apply document 'manual.md': no knowledge store is configured"):
        await operator.run(record, bare)

    clients = RuntimeClients(Settings(database_url=SecretStr(postgres_dsn), triton_url=None))
    ctx = OperatorContext(tables={}, clock=FixedClock(), clients=clients)
    operator = IndexDocument(IndexDocumentConfig(max_batch=16))
    operator.warm_up(ctx)
    try:
        applied = await operator.run(record, ctx)
        assert (applied.kind, applied.action, applied.doc_id, applied.publish_id) == (
            "document",
            "added",
            "manual.md",
            "p-1",
        )
        assert applied.domain == "support" and applied.chunks == applied.embedded > 0
        released = await operator.run(KnowledgeRecord.release("support", publish_id="p-1"), ctx)
        assert (released.action, released.release_id) == ("released", "support@1")
        deleted = await operator.run(KnowledgeRecord.tombstone("manual.md", publish_id="p-1"), ctx)
        assert (deleted.kind, deleted.action, deleted.chunks) == ("delete", "deleted", applied.chunks)
        empty = await operator.run(KnowledgeRecord.release("nobody"), ctx)
        assert (empty.action, empty.release_id) == ("empty", None)
    finally:
        await clients.close()
