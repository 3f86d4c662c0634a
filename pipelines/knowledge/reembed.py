"""Blue/green re-embedding: every chunk into a new model's index, then one switch to it when it is complete.

`reembed` creates the index for `embedder`'s model (state `building`, named after the model unless told),
embeds the chunks the store keeps that have no vector there, a batch at a time, each batch committed on
its own, and switches the live index to it in one transaction that refuses while any chunk lacks a vector.

- Every chunk the store keeps is embedded, not only the live releases': the versions older releases hold
  too, so rolling a release back after the switch needs no embedding either.
- Resumable: what a killed run committed stays, and a rerun embeds only the chunks still missing.
- Nothing ingested meanwhile is lost: while the index is `building`, every document write fills it too
  (`ingest.write_targets`), and a chunk that still slips in between a batch and the switch makes the
  switch refuse (`IndexIncompleteError`); the loop then embeds it and tries again.
- The index live before is retired with its vectors: `kb switch-index` goes back without embedding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from connectors.knowledge.pgvector import IndexIncompleteError, IndexInfo
from connectors.knowledge.protocols import Embedder
from pipelines.knowledge.ingest import default_index_name, embedding_text
from schemas.knowledge import Chunk

__all__ = ["ReembedProgress", "ReembedReport", "ReembedStore", "reembed"]

DEFAULT_BATCH = 64


class ReembedStore(Protocol):
    """What re-embedding needs of the store (PgVectorStore has it)."""

    async def ensure_index(self, name: str, model_id: str, dimension: int) -> IndexInfo: ...

    async def mark_building(self, name: str) -> IndexInfo: ...

    async def count_missing(self, index: str) -> tuple[int, int]: ...

    async def missing_chunks(self, index: str, limit: int) -> list[Chunk]: ...

    async def write_vectors(self, index: str, vectors: dict[str, np.ndarray]) -> int: ...

    async def set_live_index(self, name: str, *, require_complete: bool = True) -> str | None: ...


@dataclass(frozen=True)
class ReembedProgress:
    """After each batch: chunks with a vector in the new index out of the chunks the store keeps."""

    index: str
    done: int
    total: int
    embedded: int  # by this run


@dataclass
class ReembedReport:
    index: str
    model_id: str
    embedded: int = 0  # chunks this run embedded
    already: int = 0  # chunks that had a vector when it started (a resumed run, or a switch back)
    total: int = 0  # chunks the store keeps, at the end
    batches: int = 0
    switched: bool = False
    previous: str | None = None  # the index live before the switch
    was_live: bool = False  # the index was live already: nothing to switch


async def reembed(
    store: ReembedStore,
    embedder: Embedder,
    *,
    index: str | None = None,
    batch: int = DEFAULT_BATCH,
    switch: bool = True,
    on_progress: Callable[[ReembedProgress], None] | None = None,
) -> ReembedReport:
    """Fill the index for `embedder`'s model (`index`, default named after the model) with every chunk the
    store keeps, `batch` chunks per call to the model, then make it live (unless `switch` is False: it stays
    `building`, kept complete by every ingest, for `kb switch-index` later). `on_progress` is called after
    each committed batch; an exception it raises stops the run there, and a rerun resumes."""
    if batch < 1:
        raise ValueError("batch is at least 1")
    name = index or default_index_name(embedder)
    info = await store.ensure_index(name, embedder.model_id, embedder.dimension)
    report = ReembedReport(index=name, model_id=embedder.model_id, was_live=info.state == "live")
    if not report.was_live:
        # a retired index catching up must be kept complete by concurrent ingests, as a new one is
        await store.mark_building(name)
    missing, total = await store.count_missing(name)
    report.already = total - missing

    def progress() -> None:
        if on_progress is not None:
            on_progress(ReembedProgress(name, total - missing, total, report.embedded))

    progress()
    while True:
        chunks = await store.missing_chunks(name, batch)
        if chunks:
            # the model runs on this machine's CPU: off the event loop, so the database I/O goes on
            vectors = await asyncio.to_thread(embedder.embed_passages, [embedding_text(c) for c in chunks])
            await store.write_vectors(name, {c.chunk_id: vectors[i] for i, c in enumerate(chunks)})
            report.embedded += len(chunks)
            report.batches += 1
            missing, total = await store.count_missing(name)
            progress()
            continue
        if not switch or report.was_live:
            break
        try:
            report.previous = await store.set_live_index(name)
        except IndexIncompleteError:
            continue  # a document was written between the last batch and the switch: embed it too
        report.switched = True
        break
    report.total = total
    return report
