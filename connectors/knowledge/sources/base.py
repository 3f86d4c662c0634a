"""What every knowledge source shares: the `Source` contract, per-document errors, content checks.

A source yields documents one at a time and, where one cannot be read, an error naming it, and
goes on: one bad file never stops an ingest. After the iteration `complete` says whether the
source listed everything it has, so that documents it no longer lists may be deleted; a crawl cut
short by its page limit or by failed fetches is not complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

from pydantic import ValidationError

from schemas.knowledge import KnowledgeDocument

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BadContent",
    "Source",
    "SourceError",
    "SourceItem",
    "check_text",
    "content_hash",
    "decode_text",
    "make_document",
    "parse_datetime",
]

# Larger than any help-center article; a file beyond it is a dump, a video or an accident.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class SourceError:
    """A document the source could not read: where it is (path, row, URL) and why, in words."""

    location: str
    reason: str
    doc_id: str | None = None  # when known, the document keeps its stored version (not a deletion)

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


SourceItem = KnowledgeDocument | SourceError


class BadContent(ValueError):
    """Text a document may not hold (NUL bytes, binary junk, an encoding that is not UTF-8)."""


class Source(Protocol):
    """A place documents come from: a folder, an export file, a website."""

    @property
    def name(self) -> str:
        """Stable across runs (e.g. `folder:/srv/kb`): the documents it wrote are its own to delete."""
        ...

    @property
    def complete(self) -> bool:
        """After iterating: whether every document the source has was listed (errors included)."""
        ...

    def estimate(self) -> int | None:
        """How many items to expect, for a progress bar; None when unknown (a crawl)."""
        ...

    def documents(self) -> AsyncIterator[SourceItem]: ...


def content_hash(title: str, body: str, url: str | None, section: str | None) -> str:
    """sha256 of what a reader sees; fields joined with a separator no text holds, so no two
    different documents hash alike by moving text between fields."""
    joined = "\x1f".join((title, body, url or "", section or ""))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def decode_text(data: bytes) -> str:
    """Strict UTF-8 (a BOM is dropped), with the offending byte's offset when it is not."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadContent(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    return check_text(text)


def check_text(text: str) -> str:
    """Refuse text that is binary in disguise: NUL characters, or mostly control characters."""
    if "\x00" in text:
        raise BadContent(f"holds NUL characters (first at offset {text.index(chr(0))}): binary, not text")
    sample = text[:65536]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f")
    if sample and controls / len(sample) > 0.05:
        raise BadContent(f"{controls} control characters in the first {len(sample)}: binary, not text")
    return text


def make_document(
    *,
    doc_id: str,
    title: str,
    body: str,
    source: str,
    domain: str,
    url: str | None = None,
    section: str | None = None,
    language: str | None = None,
    updated_at: datetime | None = None,
) -> KnowledgeDocument:
    """A validated document with its content hash; a field out of bounds is BadContent naming it."""
    body = body.strip()
    if not body:
        raise BadContent("no text")
    try:
        return KnowledgeDocument(
            doc_id=doc_id,
            title=title.strip() or doc_id,
            body=body,
            url=url or None,
            section=section or None,
            domain=domain,
            language=language or "en",
            updated_at=updated_at,
            source=source,
            content_hash=content_hash(title.strip() or doc_id, body, url or None, section or None),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise BadContent(problems) from None


def parse_datetime(value: object, field_name: str = "updated_at") -> datetime | None:
    """A date or timestamp from YAML, JSON or CSV (ISO 8601); naive ones are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadContent(f"{field_name}: {value!r} is not an ISO 8601 date or timestamp") from None
    else:
        raise BadContent(f"{field_name}: {value!r} is not a date")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
