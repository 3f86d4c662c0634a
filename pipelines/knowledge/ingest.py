"""Ingest: a source's documents into the knowledge store, then a release per domain made live.

Only what changed is written: a document whose content hash and domain match its head is not
chunked or embedded again, and inside a changed document only chunks new to the index are
embedded (a paragraph untouched by an edit keeps its chunk_id and its vector). Documents a
complete source no longer lists become deletions; those it reported but could not read keep
their stored version.

`apply_document` and `apply_tombstone` are the unit of work, each idempotent: the `knowledge`
stream stage that consumes the compacted `sf.knowledge` topic calls them per record
(`operators/index_document.py`, through `pipelines/runtime/knowledge.py::StoreIndexer`), and a
redelivered record changes nothing; `publish.py` puts a source on that topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from connectors.knowledge.chunking import ChunkingConfig, chunk_document, contextual_text
from connectors.knowledge.pgvector import DocumentHead, IndexInfo, ReleaseInfo, WriteResult
from connectors.knowledge.protocols import Embedder
from connectors.knowledge.sources.base import Source, SourceError
from schemas.knowledge import Chunk, KnowledgeDocument

__all__ = [
    "ApplyResult",
    "Chunker",
    "IngestProgress",
    "IngestReport",
    "Removed",
    "apply_document",
    "apply_tombstone",
    "default_chunker",
    "embedding_text",
    "ingest",
    "source_changes",
]

Chunker = Callable[[KnowledgeDocument], Sequence[Chunk]]
DEFAULT_CHUNKING = ChunkingConfig()
Action = Literal["added", "changed", "unchanged", "deleted", "absent"]


class KnowledgeStore(Protocol):
    """What ingest needs of the store (PgVectorStore has it)."""

    async def ensure_index(self, name: str, model_id: str, dimension: int) -> IndexInfo: ...

    async def live_index(self) -> IndexInfo | None: ...

    async def set_live_index(self, name: str) -> None: ...

    async def document_heads(self, source: str | None = None) -> dict[str, DocumentHead]: ...

    async def document_head(self, doc_id: str) -> DocumentHead | None: ...

    async def missing_vectors(self, index: str, chunk_ids: Sequence[str]) -> set[str]: ...

    async def version_embedded(self, index: str, doc_id: str, content_hash: str) -> bool: ...

    async def write_document(
        self, index: str, document: KnowledgeDocument, chunks: Sequence[Chunk], vectors: Mapping[str, np.ndarray]
    ) -> WriteResult: ...

    async def delete_document(self, index: str, doc_id: str) -> int: ...

    async def create_release(
        self, domain: str, *, only_if_changed: bool = True, make_live: bool = True, note: str | None = None
    ) -> tuple[ReleaseInfo | None, bool]: ...

    async def collect_garbage(self) -> int: ...


@dataclass(frozen=True)
class ApplyResult:
    doc_id: str
    action: Action
    chunks: int = 0
    embedded: int = 0  # chunks embedded for this write (0 when every vector was there)


@dataclass(frozen=True)
class IngestProgress:
    """One step of an ingest, for a progress bar: a document done, skipped, or deleted."""

    kind: Literal["document", "skipped", "deleted", "releasing", "applied"]  # applied: the stream stage's
    label: str
    done: int
    estimate: int | None


@dataclass
class IngestReport:
    source: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[SourceError] = field(default_factory=list)
    embedded: int = 0
    complete: bool = False  # the source listed everything: deletions were applied
    releases: list[ReleaseInfo] = field(default_factory=list)  # the release live per domain after
    new_releases: list[str] = field(default_factory=list)
    index: str = ""


def embedding_text(chunk: Chunk) -> str:
    """What is embedded for a chunk: its title and heading path give a short paragraph its subject.

    The chunker's `contextual_text`, exactly what the evaluation embedded, so the measured figures and
    the fitted answerability model hold for the store's vectors.
    """
    return contextual_text(chunk)


def default_chunker(document: KnowledgeDocument) -> list[Chunk]:
    """The knowledge base's chunking: structure-aware, with the measured defaults (`ChunkingConfig()`)."""
    return chunk_document(document, DEFAULT_CHUNKING)


def default_index_name(embedder: Embedder) -> str:
    """One index per model: the model's id names it."""
    return embedder.model_id


async def apply_document(
    document: KnowledgeDocument, *, index: str, embedder: Embedder, chunker: Chunker, store: KnowledgeStore
) -> ApplyResult:
    """Make `document` its doc_id's head version: chunk it, embed the chunks the index lacks, write
    it in one transaction. A document equal to its head, and embedded in `index`, is left alone."""
    head = await store.document_head(document.doc_id)
    if (
        head is not None
        and not head.deleted
        and (head.content_hash, head.domain, head.source) == (document.content_hash, document.domain, document.source)
        and await store.version_embedded(index, document.doc_id, document.content_hash)
    ):
        return ApplyResult(document.doc_id, "unchanged")
    chunks = list(chunker(document))
    if not chunks:
        raise ValueError(f"the chunker made no chunks of {document.doc_id}")
    missing = await store.missing_vectors(index, [c.chunk_id for c in chunks])
    to_embed = [c for c in chunks if c.chunk_id in missing]
    vectors: dict[str, np.ndarray] = {}
    if to_embed:
        # the model runs on this machine's CPU: off the event loop, so progress and I/O go on
        embedded = await asyncio.to_thread(embedder.embed_passages, [embedding_text(c) for c in to_embed])
        vectors = {chunk.chunk_id: embedded[i] for i, chunk in enumerate(to_embed)}
    await store.write_document(index, document, chunks, vectors)
    action: Action = "changed" if head is not None and not head.deleted else "added"
    return ApplyResult(document.doc_id, action, len(chunks), len(to_embed))


async def apply_tombstone(doc_id: str, *, index: str, store: KnowledgeStore) -> ApplyResult:
    """Delete `doc_id` from the head (a delete record on the topic); releases that hold it keep it."""
    removed = await store.delete_document(index, doc_id)
    return ApplyResult(doc_id, "deleted" if removed else "absent", removed)


@dataclass(frozen=True)
class Removed:
    """A document this source wrote before and no longer lists: it gets a tombstone."""

    doc_id: str


async def source_changes(
    source: Source, heads: Mapping[str, DocumentHead]
) -> AsyncIterator[KnowledgeDocument | SourceError | Removed]:
    """What one reading of `source` changes: each document it reads (or could not read), then, only
    when it was read completely, a `Removed` for each stored document of it that it did not list.

    Ingest writes these to the store and publish sends them to the stream, so both delete alike.
    """
    seen: set[str] = set()
    async for item in source.documents():
        if item.doc_id is not None:
            seen.add(item.doc_id)  # unreadable now is not deleted: its stored version stays
        yield item
    if source.complete:
        for doc_id, head in sorted(heads.items()):
            if not head.deleted and doc_id not in seen:
                yield Removed(doc_id)


async def ingest(
    source: Source,
    domain: str | None,
    embedder: Embedder,
    chunker: Chunker,
    store: KnowledgeStore,
    *,
    index: str | None = None,
    on_progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport:
    """Bring the store up to date with `source`, then cut and publish a release for every domain
    the source's documents are in (and `domain`, when given, even if it is now empty).

    A domain whose documents did not change gets no new release, and its live pointer stays where
    it is (a rollback survives re-ingesting the same source).
    """
    index = index or default_index_name(embedder)
    await store.ensure_index(index, embedder.model_id, embedder.dimension)
    report = IngestReport(source=source.name, index=index)
    heads = await store.document_heads(source=source.name)
    domains = {head.domain for head in heads.values()} | ({domain} if domain else set())
    estimate = source.estimate()
    done = 0

    def progress(kind: Literal["document", "skipped", "deleted", "releasing"], label: str) -> None:
        if on_progress is not None:
            on_progress(IngestProgress(kind, label, done, estimate))

    async for change in source_changes(source, heads):
        if isinstance(change, Removed):
            result = await apply_tombstone(change.doc_id, index=index, store=store)
            if result.action == "deleted":
                report.deleted.append(change.doc_id)
            progress("deleted", change.doc_id)
            continue
        done += 1
        if isinstance(change, SourceError):
            report.skipped.append(change)
            progress("skipped", change.location)
            continue
        domains.add(change.domain)
        result = await apply_document(change, index=index, embedder=embedder, chunker=chunker, store=store)
        report.embedded += result.embedded
        getattr(report, result.action).append(change.doc_id)
        progress("document", change.doc_id)
    report.complete = source.complete

    for name in sorted(domains):
        progress("releasing", name)
        release, created = await store.create_release(name, note=f"ingest of {source.name}")
        if release is not None:
            report.releases.append(release)
            if created:
                report.new_releases.append(release.release_id)
    if await store.live_index() is None:
        await store.set_live_index(index)  # the first index filled is the one searches use
    await store.collect_garbage()
    return report
