"""The knowledge base as the stream's operators search and write it: one retriever, one indexer per worker.

`StoreRetriever` opens its PostgreSQL pool on the first question, not at start, so a worker whose
database is down still starts and answers from its templates; it finds the live embedding index
then, and builds the `HybridRetriever` over it once. Until the knowledge base has a live index
(nothing ingested yet) every call raises `KnowledgeUnavailable` and is asked again next time, so
an ingest that finishes after the workers started is picked up without a restart.

`StoreIndexer` is what the `knowledge` stage (`operators/index_document.py`) writes with: the ingest's
own idempotent units of work (`pipelines/knowledge/ingest.py`: `apply_document`, `apply_tombstone`, and
the release an ingest ends with) over this process's embedder and a store opened (and migrated) on the
first record. A store that is away is waited for, with backoff, inside the record's time limit; only an
error that blames the record (no chunks, a value PostgreSQL refuses, another model's index) is raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
import numpy as np

from connectors.knowledge.pgvector import PgVectorStore
from connectors.knowledge.protocols import Embedder, SearchFilters
from connectors.knowledge.retriever import HybridRetriever, Retrieval
from connectors.postgres.errors import is_data_error
from operators.protocols import KnowledgeRelease
from pipelines.knowledge.ingest import (
    ApplyResult,
    apply_document,
    apply_tombstone,
    default_chunker,
    default_index_name,
)
from schemas.knowledge import KnowledgeDocument, Passage

__all__ = ["BatchedEmbedder", "KnowledgeUnavailable", "StoreIndexer", "StoreRetriever"]

T = TypeVar("T")

log = logging.getLogger(__name__)


class KnowledgeUnavailable(RuntimeError):
    """The knowledge base cannot answer: nothing ingested yet, or vectors of another model."""


class StoreRetriever:
    """`operators.protocols.KnowledgeRetriever` over the PgVectorStore at `dsn`."""

    def __init__(self, dsn: str, embedder: Embedder, *, k: int = 5, pool_size: int = 2) -> None:
        self.embedder = embedder
        self.k = k
        self.store = PgVectorStore(dsn, pool_size=pool_size)
        self._retriever: HybridRetriever | None = None
        self._lock = asyncio.Lock()

    async def retriever(self) -> HybridRetriever:
        if self._retriever is not None:
            return self._retriever
        async with self._lock:
            if self._retriever is None:
                index = await self.store.live_index()
                if index is None:
                    raise KnowledgeUnavailable("the knowledge base has no live index: nothing was ingested yet")
                if index.model_id != self.embedder.model_id:
                    raise KnowledgeUnavailable(
                        f"the live index holds {index.model_id} vectors; this worker embeds with "
                        f"{self.embedder.model_id}: re-ingest the sources"
                    )
                self._retriever = HybridRetriever(self.store, self.embedder, index.name, k=self.k)
                log.info("knowledge: answering from index %s", index.name)
            return self._retriever

    async def retrieve(
        self, query: str, *, history: Sequence[str] = (), k: int | None = None, domains: Sequence[str] = ()
    ) -> Retrieval:
        retriever = await self.retriever()
        return await retriever.retrieve(query, SearchFilters(domains=tuple(domains)), history=history, k=k)

    async def article(self, doc_id: str) -> list[Passage]:
        return await (await self.retriever()).article(doc_id)

    async def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []

        def embed() -> list[float]:
            # one call for both: the model is loaded once and a batch costs little more than one text
            vectors = self.embedder.embed_queries([query, *texts])
            return [float(v) for v in np.asarray(vectors[1:]) @ np.asarray(vectors[0])]

        return await asyncio.to_thread(embed)

    async def close(self) -> None:
        self._retriever = None
        await self.store.close()


class BatchedEmbedder:
    """An `Embedder` that hands the model at most `max_batch` passages per call: a long document's chunks
    are embedded in batches (bounded memory, the model's efficient batch size), queries pass through."""

    def __init__(self, inner: Embedder, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch is at least 1")
        self.inner = inner
        self.max_batch = max_batch
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), self.max_batch):
            self.calls += 1
            parts.append(np.asarray(self.inner.embed_passages(texts[start : start + self.max_batch])))
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension), dtype=np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)


def is_store_outage(exc: BaseException) -> bool:
    """Whether `exc` is the store being away (connection refused or lost, server starting or shutting
    down, too many connections) rather than anything about the record written."""
    if is_data_error(exc):
        return False
    if isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.ConnectionDoesNotExistError):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError):
        return "closed" in str(exc) or "connection" in str(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in {"08", "53", "57"}


class StoreIndexer:
    """`operators.protocols.KnowledgeIndexer` over the PgVectorStore at `dsn`, embedding with `embedder`."""

    def __init__(
        self,
        dsn: str,
        embedder: Embedder,
        *,
        index: str | None = None,
        max_batch: int = 32,
        pool_size: int = 2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.embedder = BatchedEmbedder(embedder, max_batch)
        self.index = index or default_index_name(embedder)
        self.pool_size = pool_size
        self.retry_max_s = retry_max_s
        self._store: PgVectorStore | None = None
        self._lock = asyncio.Lock()

    async def store(self) -> PgVectorStore:
        """The store, migrated and with this indexer's embedding index, opened on first use."""
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                store = await PgVectorStore.open(self.dsn, pool_size=self.pool_size)
                try:
                    await store.ensure_index(self.index, self.embedder.model_id, self.embedder.dimension)
                except BaseException:
                    await store.close()
                    raise
                self._store = store
                log.info("knowledge: writing index %s", self.index)
            return self._store

    async def _with_store(self, work: Callable[[PgVectorStore], Awaitable[T]]) -> T:
        """`work(store)`, tried again (with backoff, until it succeeds or the stage's time limit cancels it)
        while the store is away; any other error is raised at once."""
        delay = 0.2
        while True:
            try:
                return await work(await self.store())
            except Exception as exc:
                if not is_store_outage(exc):
                    raise
                log.warning("knowledge: the store is away (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)

    async def apply_document(self, document: KnowledgeDocument) -> ApplyResult:
        return await self._with_store(
            lambda store: apply_document(
                document, index=self.index, embedder=self.embedder, chunker=default_chunker, store=store
            )
        )

    async def apply_tombstone(self, doc_id: str) -> ApplyResult:
        return await self._with_store(lambda store: apply_tombstone(doc_id, index=self.index, store=store))

    async def publish_release(self, domain: str, note: str | None = None) -> KnowledgeRelease:
        """What `ingest` does once its documents are in, for one domain: cut a release when the head differs
        from the latest (a new one goes live; an unchanged domain keeps its live release, a rollback too),
        make this index live when none is, and drop the versions nothing holds any more."""

        async def publish(store: PgVectorStore) -> KnowledgeRelease:
            release, created = await store.create_release(domain, note=note)
            if await store.live_index() is None:
                await store.set_live_index(self.index)  # the first index filled is the one searches use
            await store.collect_garbage()
            return KnowledgeRelease(release.release_id if release is not None else None, created)

        return await self._with_store(publish)

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()
