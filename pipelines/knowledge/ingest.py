"""Ingest: a source's documents into the knowledge store, then a release per domain made live.

Only what changed is written: a document whose content hash and domain match its head is not
chunked or embedded again, and inside a changed document only chunks new to the index are
embedded (a paragraph untouched by an edit keeps its chunk_id and its vector). Documents a
complete source no longer lists become deletions; those it reported but could not read keep
their stored version.

Which indexes a document goes into (`write_targets`): the live one and every one being built (a new
model's, filled by `supportflow kb reembed` until it is switched to), each embedded with its own model,
so a blue/green re-embedding loses no document ingested while it runs and the index switched to is
complete. Before anything is live, the ingest's own index (named after its model), made live at the end.

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
from connectors.knowledge.models import EmbedderFor, EmbeddingModelUnavailable
from connectors.knowledge.pgvector import (
    DocumentHead,
    EmbeddingIndexError,
    IndexesChangedError,
    IndexInfo,
    ReleaseInfo,
    WriteResult,
)
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
    "default_index_name",
    "embedding_text",
    "ingest",
    "source_changes",
    "write_targets",
]

Chunker = Callable[[KnowledgeDocument], Sequence[Chunk]]
DEFAULT_CHUNKING = ChunkingConfig()
Action = Literal["added", "changed", "unchanged", "deleted", "absent"]


class KnowledgeStore(Protocol):
    """What ingest needs of the store (PgVectorStore has it)."""

    async def ensure_index(self, name: str, model_id: str, dimension: int) -> IndexInfo: ...

    async def live_index(self) -> IndexInfo | None: ...

    async def written_indexes(self) -> list[IndexInfo]: ...

    async def set_live_index(self, name: str, *, require_complete: bool = True) -> str | None: ...

    async def document_heads(self, source: str | None = None) -> dict[str, DocumentHead]: ...

    async def document_head(self, doc_id: str) -> DocumentHead | None: ...

    async def missing_vectors(self, index: str, chunk_ids: Sequence[str]) -> set[str]: ...

    async def version_embedded(self, index: str, doc_id: str, content_hash: str) -> bool: ...

    async def write_document(
        self,
        index: str,
        document: KnowledgeDocument,
        chunks: Sequence[Chunk],
        vectors: Mapping[str, np.ndarray],
        *,
        also: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        require_written: bool = False,
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


async def write_targets(
    store: KnowledgeStore, embedder: Embedder, *, index: str | None = None, embedder_for: EmbedderFor | None = None
) -> list[tuple[IndexInfo, Embedder]]:
    """The indexes a document write fills, each with the embedder of its model: the live index and every
    index being built; `index`, when named, too (created for `embedder`'s model if new); with nothing live
    and no `index`, the one named after `embedder`'s model (created: the first ingest's, made live at its end).

    `embedder` embeds for indexes of its own model; `embedder_for` loads the model of any other (after a
    switch to another model, or while one is being built). Without it such an index is an EmbeddingIndexError.
    """
    indexes = await store.written_indexes()
    if index is None and not any(info.state == "live" for info in indexes):
        index = default_index_name(embedder)
    if index is not None and index not in {info.name for info in indexes}:
        indexes.append(await store.ensure_index(index, embedder.model_id, embedder.dimension))
    targets = []
    for info in indexes:
        if info.model_id == embedder.model_id:
            targets.append((info, embedder))
            continue
        if embedder_for is None:
            raise EmbeddingIndexError(
                f"index {info.name!r} ({info.state}) holds {info.model_id} vectors and this ingest embeds with "
                f"{embedder.model_id} only"
            )
        try:
            targets.append((info, embedder_for(info.model_id)))
        except (EmbeddingModelUnavailable, OSError, ImportError) as exc:
            raise EmbeddingIndexError(f"index {info.name!r} ({info.state}): {exc}") from exc
    return targets


async def apply_document(
    document: KnowledgeDocument,
    *,
    index: str | None = None,
    embedder: Embedder,
    chunker: Chunker,
    store: KnowledgeStore,
    embedder_for: EmbedderFor | None = None,
    attempts: int = 5,
) -> ApplyResult:
    """Make `document` its doc_id's head version: chunk it, embed the chunks each target index lacks
    (`write_targets`), write it into all of them in one transaction. A document equal to its head, and
    embedded in every target, is left alone. When an index was created or switched to between the
    embedding and the write, the document is embedded again for the indexes now written (`attempts`)."""
    for attempt in range(attempts):
        targets = await write_targets(store, embedder, index=index, embedder_for=embedder_for)
        head = await store.document_head(document.doc_id)
        same = (
            head is not None
            and not head.deleted
            and (head.content_hash, head.domain, head.source)
            == (document.content_hash, document.domain, document.source)
        )
        if same and all(
            [await store.version_embedded(i.name, document.doc_id, document.content_hash) for i, _ in targets]
        ):
            return ApplyResult(document.doc_id, "unchanged")
        chunks = list(chunker(document))
        if not chunks:
            raise ValueError(f"the chunker made no chunks of {document.doc_id}")
        vectors: dict[str, dict[str, np.ndarray]] = {}
        embedded = 0
        for info, model in targets:
            missing = await store.missing_vectors(info.name, [c.chunk_id for c in chunks])
            to_embed = [c for c in chunks if c.chunk_id in missing]
            vectors[info.name] = {}
            if to_embed:
                # the model runs on this machine's CPU: off the event loop, so progress and I/O go on
                made = await asyncio.to_thread(model.embed_passages, [embedding_text(c) for c in to_embed])
                vectors[info.name] = {chunk.chunk_id: made[i] for i, chunk in enumerate(to_embed)}
                embedded += len(to_embed)
        primary = targets[0][0].name
        try:
            await store.write_document(primary, document, chunks, vectors[primary], also=vectors, require_written=True)
        except IndexesChangedError:
            if attempt == attempts - 1:
                raise
            continue
        # the same version only filled an index that lacked it (one being built): not a change of the document
        action: Action = "unchanged" if same else "changed" if head is not None and not head.deleted else "added"
        return ApplyResult(document.doc_id, action, len(chunks), embedded)
    raise AssertionError("unreachable")  # the loop returns or raises


async def apply_tombstone(doc_id: str, *, index: str | None = None, store: KnowledgeStore) -> ApplyResult:
    """Delete `doc_id` from the head (a delete record on the topic); releases that hold it keep it."""
    # a tombstone moves the head only: no vector is written, so any index name will do
    removed = await store.delete_document(index or "", doc_id)
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
    embedder_for: EmbedderFor | None = None,
    on_progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport:
    """Bring the store up to date with `source`, then cut and publish a release for every domain
    the source's documents are in (and `domain`, when given, even if it is now empty).

    A domain whose documents did not change gets no new release, and its live pointer stays where
    it is (a rollback survives re-ingesting the same source).

    Documents go into the live index and every index being built (`write_targets`; `embedder_for` loads
    their models when they are not `embedder`'s), and into `index` when one is named.
    """
    requested = index
    targets = await write_targets(store, embedder, index=index, embedder_for=embedder_for)
    index = index or targets[0][0].name
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
            result = await apply_tombstone(change.doc_id, store=store)
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
        result = await apply_document(
            change, index=requested, embedder=embedder, chunker=chunker, store=store, embedder_for=embedder_for
        )
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
        # the first index filled is the one searches use; nothing was live to compare it with
        await store.set_live_index(index, require_complete=False)
    await store.collect_garbage()
    return report
