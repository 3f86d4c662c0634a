"""The knowledge base as the stream's operators search it: one retriever per worker process.

`StoreRetriever` opens its PostgreSQL pool on the first question, not at start, so a worker whose
database is down still starts and answers from its templates; it finds the live embedding index
then, and builds the `HybridRetriever` over it once. Until the knowledge base has a live index
(nothing ingested yet) every call raises `KnowledgeUnavailable` and is asked again next time, so
an ingest that finishes after the workers started is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np

from connectors.knowledge.pgvector import PgVectorStore
from connectors.knowledge.protocols import Embedder, SearchFilters
from connectors.knowledge.retriever import HybridRetriever, Retrieval

__all__ = ["KnowledgeUnavailable", "StoreRetriever"]

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
