"""The knowledge base's records: a document as it travels on `sf.knowledge`, its chunks, and the
passages retrieval hands to the operators that answer from them.

A document is keyed by `doc_id` on a compacted topic, so the topic holds the latest version of each
document and a deleted document is a tombstone (a null value under its key).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from schemas._base import Record

__all__ = ["Chunk", "KnowledgeDocument", "Passage"]


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
