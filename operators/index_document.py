"""index_document: the `knowledge` stage's one operator, the knowledge base kept as a stream.

Documents are records on the compacted topic `sf.knowledge`, one key per document (`KnowledgeRecord`):

- `document`: the document's current version. It is chunked (structure-aware, the ingest's chunker), the
  chunks the live index and any index being built (`supportflow kb reembed`) lack are embedded in batches
  (`max_batch` per call), each with its index's model, and the version is written into all of them in one
  transaction (`pipelines/knowledge/ingest.py::apply_document`, through the indexer
  `ctx.clients.knowledge_indexer` gives this process: its embedder, its store).
- `delete`: the document's tombstone (`apply_tombstone`): it leaves the head; releases holding it keep it.
  The publishing command writes an explicit record (it says who deleted the document, and it stays on the
  compacted topic, so a consumer replaying it from the start sees the deletion); a null value under a
  document's key, Kafka's own tombstone, is read as one too (`KnowledgeRecord.from_null_value`, which the
  runtime asks of a source record type when a value is null).
- `release`: publish a release of a domain (`create_release` + the live index + garbage collection: the
  end of `ingest`), keyed `kb-release:<domain>`.

**How a release goes live.** The publishing command (`supportflow kb ingest --via-stream`) writes its
documents and tombstones, waits until the broker has them all, then writes one `release` record per
domain it touched. `sf.knowledge` has a single partition and the stage takes one record at a time
(`max_in_flight: 1`), so the stage meets the release record only after every document published before
it is in the store: the release holds exactly the publish's documents, as a direct `kb ingest` would. One
release per publish, not per document (which would flood `kb releases` and undo a rollback on the next
document): the semantics of `kb releases`, `kb diff` and `kb rollback` are unchanged. A domain whose
documents did not change gets no new release and keeps its live one (a rollback too), so a redelivered
release record changes nothing either. A document published without a release record is in the head
(and in the next release of its domain) but not yet searched.

Delivery is at-least-once: the runtime commits a record's offset only after its outputs are delivered,
and its output (`KnowledgeApplied`, on `sf.knowledge.applied`) is made only after the store write. A
worker killed mid-record replays it; each apply is idempotent (a version equal to the head is left alone;
chunks are keyed by content), so nothing is lost and nothing is written twice. A record that cannot be
applied (a document of no text, a value the store refuses) raises and is dead-lettered with the reason;
the stream goes on. A store that is away is waited for (inside the stage's `operator_timeout_s`).
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import KnowledgeIndexer, KnowledgeIndexOptions, OperatorContext
from schemas.knowledge import KnowledgeApplied, KnowledgeRecord

log = logging.getLogger(__name__)


class IndexDocumentConfig(OperatorConfig):
    model_name: str = Field(
        default="text_embedder", description="the embedder Triton serves (triton_models/<model_name>)"
    )
    index: str | None = Field(
        default=None,
        description="an embedding index written besides the live one and those being built (each with its own "
        "model); unset: those only (before anything is live, the model's id)",
    )
    max_batch: int = Field(default=32, ge=1, le=1024, description="chunks embedded per call to the model")
    pool_size: int = Field(default=2, ge=1, le=16, description="PostgreSQL connections of the writer")


class IndexDocument(Operator[KnowledgeRecord, KnowledgeApplied]):
    """Apply one `sf.knowledge` record to the knowledge store; say what it did."""

    name = "index_document"
    input_type = KnowledgeRecord
    output_type = KnowledgeApplied
    Config: ClassVar[type[OperatorConfig]] = IndexDocumentConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._indexer: KnowledgeIndexer | None = None
        self._why_none = "the worker has no clients"

    def warm_up(self, ctx: OperatorContext) -> None:
        cfg: IndexDocumentConfig = self.config  # type: ignore[assignment]
        if ctx.clients is None:
            return
        options = KnowledgeIndexOptions(
            model_name=cfg.model_name, index=cfg.index, max_batch=cfg.max_batch, pool_size=cfg.pool_size
        )
        try:
            self._indexer = ctx.clients.knowledge_indexer(options)
        except (OSError, ImportError, ValueError) as exc:  # no exported embedder
            self._why_none = f"no embedder ({exc})"
            log.error("index_document: %s; sf.knowledge records will be dead-lettered", self._why_none)
            return
        if self._indexer is None:
            self._why_none = "no knowledge store is configured (DATABASE_URL)"

    async def run(self, record: KnowledgeRecord, ctx: OperatorContext) -> KnowledgeApplied:
        indexer = self._indexer
        if indexer is None:
            raise RuntimeError(f"cannot apply {record.kind} {record.partition_key()!r}: {self._why_none}")
        common = {"kind": record.kind, "publish_id": record.publish_id, "applied_at": ctx.clock.now()}
        if record.kind == "document":
            assert record.document is not None  # the record's validator says so
            change = await indexer.apply_document(record.document)
            return KnowledgeApplied(
                **common,
                action=change.action,  # type: ignore[arg-type]
                doc_id=record.doc_id,
                domain=record.document.domain,
                chunks=change.chunks,
                embedded=change.embedded,
            )
        if record.kind == "delete":
            assert record.doc_id is not None
            change = await indexer.apply_tombstone(record.doc_id)
            deleted = change.action
            return KnowledgeApplied(
                **common,
                action=deleted,  # type: ignore[arg-type]
                doc_id=record.doc_id,
                chunks=change.chunks,
            )
        assert record.domain is not None
        release = await indexer.publish_release(record.domain, record.note)
        action = "empty" if release.release_id is None else ("released" if release.created else "kept")
        return KnowledgeApplied(**common, action=action, domain=record.domain, release_id=release.release_id)
