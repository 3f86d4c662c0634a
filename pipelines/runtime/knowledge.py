"""The knowledge base as the stream's operators search and write it: one retriever, one indexer per worker.

`StoreRetriever` opens its PostgreSQL pool on the first question, not at start, so a worker whose
database is down still starts and answers from its templates. It asks the store which embedding index is
live (one small SELECT, as the retriever asks `search_generation` for the releases) on every question, or
at most once per `refresh_s` (`knowledge_refresh_s` in a worker: `retrieve` and `answer` ask four times a
question otherwise) and, when that changed (a blue/green switch, `supportflow kb reembed` or `kb switch-index`),
builds a new `HybridRetriever` over it with an embedder of that index's model (`embedder_for`, the
installed models; loaded once, off the event loop) and the answerability model fitted for it; the BM25
index of the visible chunks does not depend on the model and is carried over. Until the knowledge base
has a live index (nothing ingested yet) every call raises `KnowledgeUnavailable` and is asked again next
time, so an ingest that finishes after the workers started is picked up without a restart.

`StoreIndexer` is what the `knowledge` stage (`operators/index_document.py`) writes with: the ingest's
own idempotent units of work (`pipelines/knowledge/ingest.py`: `apply_document`, `apply_tombstone`, and
the release an ingest ends with) over this process's embedder and a store opened (and migrated) on the
first record. Like a direct ingest, it writes the live index and every index being built, each with its
own model (`embedder_for`), so a re-embedding running beside the stream loses nothing. A store that is
away is waited for, with backoff, inside the record's time limit; only an error that blames the record
(no chunks, a value PostgreSQL refuses, an index of a model not installed here) is raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
import numpy as np

from connectors.knowledge.embedding import EmbedderWrapper
from connectors.knowledge.fusion import FusionConfig
from connectors.knowledge.lexical import analyse
from connectors.knowledge.models import EmbedderFor, EmbeddingModelUnavailable
from connectors.knowledge.pgvector import IndexInfo, PgVectorStore
from connectors.knowledge.protocols import Embedder, SearchFilters
from connectors.knowledge.retriever import DEFAULT_FUSION, HybridRetriever, Retrieval
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
    """`operators.protocols.KnowledgeRetriever` over the PgVectorStore at `dsn`.

    `embedder` embeds for an index of its model and for `similarities`; `embedder_for` gives the embedder
    of any other model an index may be switched to (without it, such an index is `KnowledgeUnavailable`).
    """

    def __init__(
        self,
        dsn: str,
        embedder: Embedder,
        *,
        k: int = 5,
        pool_size: int = 2,
        embedder_for: EmbedderFor | None = None,
        refresh_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        fusion: FusionConfig = DEFAULT_FUSION,
    ) -> None:
        self.embedder = embedder
        self.embedder_for = embedder_for
        self.k = k
        self.fusion = fusion
        self.store = PgVectorStore(dsn, pool_size=pool_size)
        self.refresh_s = refresh_s
        self.clock = clock
        self._retriever: HybridRetriever | None = None
        self._live: tuple[IndexInfo | None, float] | None = None  # (the live index, when it was read)
        self._lock = asyncio.Lock()
        self.switches = 0
        """Retrievers built for a newly live index so far (tests and the log read it)."""

    async def retriever(self) -> HybridRetriever:
        """The retriever over the live index, rebuilt when another index went live since the last call."""
        index = await self._live_index()
        if index is None:
            raise KnowledgeUnavailable("the knowledge base has no live index: nothing was ingested yet")
        current = self._retriever
        if current is not None and current.index == index.name:
            return current
        async with self._lock:
            current = self._retriever
            if current is not None and current.index == index.name:
                return current
            embedder = await self._embedder_for(index.model_id)
            try:
                built = HybridRetriever(
                    self.store,
                    embedder,
                    index.name,
                    k=self.k,
                    fusion=self.fusion,
                    refresh_s=self.refresh_s,
                    clock=self.clock,
                )
            except ValueError as exc:  # no answerability model fitted for this embedding model
                raise KnowledgeUnavailable(f"index {index.name}: {exc}") from exc
            if current is not None:
                built.adopt_lexical(current)
                self.switches += 1
            self._retriever = built
            log.info("knowledge: answering from index %s (%s)", index.name, index.model_id)
            return built

    async def _live_index(self) -> IndexInfo | None:
        now = self.clock()
        seen = self._live
        if seen is not None and seen[0] is not None and now - seen[1] < self.refresh_s:
            return seen[0]
        index = await self.store.live_index()
        self._live = (index, now)
        return index

    async def _embedder_for(self, model_id: str) -> Embedder:
        if model_id == self.embedder.model_id:
            return self.embedder
        if self.embedder_for is None:
            raise KnowledgeUnavailable(
                f"the live index holds {model_id} vectors; this worker embeds with {self.embedder.model_id} only"
            )
        try:
            # loading a model reads tens of MB and takes seconds: not on the event loop
            return await asyncio.to_thread(self.embedder_for, model_id)
        except (EmbeddingModelUnavailable, OSError, ImportError) as exc:
            raise KnowledgeUnavailable(f"the live index holds {model_id} vectors: {exc}") from exc

    async def retrieve(
        self, query: str, *, history: Sequence[str] = (), k: int | None = None, domains: Sequence[str] = ()
    ) -> Retrieval:
        retriever = await self.retriever()
        return await retriever.retrieve(query, SearchFilters(domains=tuple(domains)), history=history, k=k)

    async def article(self, doc_id: str) -> list[Passage]:
        return await (await self.retriever()).article(doc_id)

    def terms(self, text: str) -> list[str]:
        return analyse(text)

    async def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []

        def embed() -> list[float]:
            # one call for both: the model is loaded once and a batch costs little more than one text
            vectors = self.embedder.embed_queries([query, *texts])
            return [float(v) for v in np.asarray(vectors[1:]) @ np.asarray(vectors[0])]

        return await asyncio.to_thread(embed)

    async def close(self) -> None:
        if self._retriever is not None:
            self._retriever.cancel_builds()
        self._retriever = None
        await self.store.close()


class BatchedEmbedder(EmbedderWrapper):
    """An `Embedder` that hands the model at most `max_batch` passages per call: a long document's chunks
    are embedded in batches (bounded memory, the model's efficient batch size), queries pass through."""

    def __init__(self, inner: Embedder, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch is at least 1")
        super().__init__(inner)
        self.max_batch = max_batch
        self.calls = 0

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), self.max_batch):
            self.calls += 1
            parts.append(np.asarray(self.inner.embed_passages(texts[start : start + self.max_batch])))
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension), dtype=np.float32)


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
        embedder_for: EmbedderFor | None = None,
    ) -> None:
        self.dsn = dsn
        self.embedder = BatchedEmbedder(embedder, max_batch)
        self.max_batch = max_batch
        self.embedder_for = embedder_for
        self.requested_index = index
        """Written besides the live and building indexes when named; None: those only."""
        self.index = index or default_index_name(embedder)
        """The index made live when nothing is (the first ingest's)."""
        self.pool_size = pool_size
        self.retry_max_s = retry_max_s
        self._store: PgVectorStore | None = None
        self._lock = asyncio.Lock()

    async def store(self) -> PgVectorStore:
        """The store, migrated, opened on first use (the indexes written are found per document)."""
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                self._store = await PgVectorStore.open(self.dsn, pool_size=self.pool_size)
            return self._store

    def _embedder_of(self, model_id: str) -> Embedder:
        """Another model's embedder, batched like this process's own."""
        if self.embedder_for is None:
            raise EmbeddingModelUnavailable(f"this worker embeds with {self.embedder.model_id} only")
        return BatchedEmbedder(self.embedder_for(model_id), self.max_batch)

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
                document,
                index=self.requested_index,
                embedder=self.embedder,
                chunker=default_chunker,
                store=store,
                embedder_for=self._embedder_of,
            )
        )

    async def apply_tombstone(self, doc_id: str) -> ApplyResult:
        return await self._with_store(lambda store: apply_tombstone(doc_id, store=store))

    async def publish_release(self, domain: str, note: str | None = None) -> KnowledgeRelease:
        """What `ingest` does once its documents are in, for one domain: cut a release when the head differs
        from the latest (a new one goes live; an unchanged domain keeps its live release, a rollback too),
        make this index live when none is, and drop the versions nothing holds any more."""

        async def publish(store: PgVectorStore) -> KnowledgeRelease:
            release, created = await store.create_release(domain, note=note)
            if await store.live_index() is None:
                # the first index filled is the one searches use (created here when no document was written)
                await store.ensure_index(self.index, self.embedder.model_id, self.embedder.dimension)
                await store.set_live_index(self.index, require_complete=False)
            await store.collect_garbage()
            return KnowledgeRelease(release.release_id if release is not None else None, created)

        return await self._with_store(publish)

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()
