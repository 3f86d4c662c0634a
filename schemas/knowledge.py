"""The knowledge base's records: a document as it travels on `sf.knowledge`, its chunks, and the
passages retrieval hands to the operators that answer from them.

`sf.knowledge` is compacted and carries `KnowledgeRecord`s keyed by `doc_id`, so the topic holds the
latest record of each document: its current version, or its tombstone, an explicit `delete` record
under its key (what `kb ingest --via-stream` writes: it says who deleted the document, and a consumer
replaying the topic from the start still sees the deletion). A null value under a document's key, Kafka's
own tombstone, is read as a `delete` record too (`KnowledgeRecord.from_null_value`). A `release`
record, keyed `kb-release:<domain>`, asks the `knowledge` stage to cut and publish a release of the
domain once the documents published before it are in. The stage reports each record it applied on
`sf.knowledge.applied` (`KnowledgeApplied`), which `supportflow kb ingest --via-stream --wait` reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from schemas._base import Record

__all__ = ["RELEASE_KEY_PREFIX", "Chunk", "KnowledgeApplied", "KnowledgeDocument", "KnowledgeRecord", "Passage"]

RELEASE_KEY_PREFIX = "kb-release:"
"""The key of a domain's release record on `sf.knowledge` (a doc_id never starts with it)."""


class KnowledgeDocument(Record):
    """One article, page or file of a tenant's knowledge, as a source gave it (Markdown or plain text)."""

    doc_id: str = Field(min_length=1, max_length=512, description="stable id from the source (path, export id, URL)")
    title: str = Field(max_length=1000)
    body: str = Field(description="Markdown or plain text; HTML and PDF are converted at ingest")
    url: str | None = Field(default=None, max_length=2048, description="where a customer can read it")
    section: str | None = Field(default=None, max_length=500)
    domain: str = Field(default="general", min_length=1, max_length=100, description="the team that curates it")
    language: str = Field(default="en", min_length=2, max_length=16)
    updated_at: datetime | None = None
    source: str = Field(min_length=1, max_length=2048, description="the ingest source, e.g. folder:/kb")
    content_hash: str = Field(min_length=1, max_length=128, description="sha256 of what a reader sees")

    def partition_key(self) -> str:
        return self.doc_id


class KnowledgeRecord(Record):
    """One record of the compacted `sf.knowledge` topic: a document's version, its tombstone, or a
    domain's "publish a release now" marker.

    `publish_id` names the command run that wrote it (`kb ingest --via-stream`), so the run can tell its
    own records' results on `sf.knowledge.applied` from others'.
    """

    kind: Literal["document", "delete", "release"]
    document: KnowledgeDocument | None = Field(default=None, description="kind document: the version to store")
    doc_id: str | None = Field(default=None, min_length=1, max_length=512, description="document and delete")
    domain: str | None = Field(default=None, min_length=1, max_length=100, description="release: the domain")
    source: str | None = Field(default=None, max_length=2048, description="who published it, e.g. folder:/kb")
    note: str | None = Field(default=None, max_length=500, description="release: the release's note")
    publish_id: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _complete(self) -> KnowledgeRecord:
        if self.kind == "document":
            if self.document is None:
                raise ValueError("a document record carries its document")
            if self.doc_id is None:
                self.doc_id = self.document.doc_id
            elif self.doc_id != self.document.doc_id:
                raise ValueError(f"doc_id {self.doc_id!r} is not its document's ({self.document.doc_id!r})")
        elif self.kind == "delete":
            if self.doc_id is None or self.document is not None:
                raise ValueError("a delete record carries the doc_id only, no document")
        elif self.domain is None or self.document is not None or self.doc_id is not None:
            raise ValueError("a release record carries its domain only, no document")
        if self.doc_id is not None and self.doc_id.startswith(RELEASE_KEY_PREFIX):
            raise ValueError(f"a doc_id may not start with {RELEASE_KEY_PREFIX!r} (release records' keys)")
        return self

    @classmethod
    def of(cls, document: KnowledgeDocument, publish_id: str | None = None) -> KnowledgeRecord:
        return cls(kind="document", document=document, source=document.source, publish_id=publish_id)

    @classmethod
    def tombstone(cls, doc_id: str, source: str | None = None, publish_id: str | None = None) -> KnowledgeRecord:
        return cls(kind="delete", doc_id=doc_id, source=source, publish_id=publish_id)

    @classmethod
    def release(
        cls, domain: str, note: str | None = None, source: str | None = None, publish_id: str | None = None
    ) -> KnowledgeRecord:
        return cls(kind="release", domain=domain, note=note, source=source, publish_id=publish_id)

    def partition_key(self) -> str:
        return self.doc_id if self.doc_id is not None else f"{RELEASE_KEY_PREFIX}{self.domain}"

    @classmethod
    def from_null_value(cls, key: str) -> KnowledgeRecord | None:
        """A null value under a document's key is its tombstone too (Kafka's own kind, which compaction
        eventually removes with the key); under a release key it means nothing."""
        if not key or key.startswith(RELEASE_KEY_PREFIX):
            return None
        return cls.tombstone(key)


class KnowledgeApplied(Record):
    """What the `knowledge` stage did with one `sf.knowledge` record, once the store has it.

    action: added, changed, unchanged, deleted, absent (a tombstone of a document the store did not
    hold), released (a new release went live) or kept (the domain's documents had not changed: no
    new release, the live one stays, a rollback included), or empty (a domain that never had a document).
    A redelivered record is reported again, with the action the store's state now gives.
    """

    kind: Literal["document", "delete", "release"]
    action: Literal["added", "changed", "unchanged", "deleted", "absent", "released", "kept", "empty"]
    doc_id: str | None = None
    domain: str | None = None
    chunks: int = Field(default=0, ge=0, description="the document's chunks (a tombstone: those that left)")
    embedded: int = Field(default=0, ge=0, description="chunks embedded for this record")
    release_id: str | None = None
    publish_id: str | None = None
    applied_at: datetime

    def partition_key(self) -> str:
        return self.doc_id if self.doc_id is not None else f"{RELEASE_KEY_PREFIX}{self.domain}"


class Chunk(BaseModel):
    """A piece of a document small enough to embed and to quote; headings above it travel with it."""

    chunk_id: str = Field(description="doc_id, ordinal and the chunk's content hash: same text, same id")
    doc_id: str
    ordinal: int = Field(ge=0)
    text: str
    headings: list[str] = Field(default_factory=list, description="the heading path above the chunk")
    title: str
    url: str | None = None
    section: str | None = None
    domain: str = "general"
    language: str = "en"
    content_hash: str = Field(description="the document's content hash (its version)")


class Passage(BaseModel):
    """A retrieved chunk with its scores: the fused one that ranks it and each retriever's own."""

    chunk_id: str
    doc_id: str
    title: str
    text: str
    url: str | None = None
    section: str | None = None
    domain: str = "general"
    score: float = Field(description="the fused score the passages are ranked by")
    scores: dict[str, float] = Field(default_factory=dict, description="per retriever, e.g. lexical, dense")
