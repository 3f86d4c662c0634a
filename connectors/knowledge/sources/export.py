"""A help-center export: a JSON array, JSON Lines or CSV file of articles.

Columns: title, body, url, section, updated_at, and optionally id, domain, language. `doc_id` is
the `id` when given, else the `url` (a row with neither cannot be told apart from the next
export's rows and is refused). A bad row is reported by its number and field and skipped; the
others are read. A body in HTML (an export from a hosted help center) is converted to text.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from connectors.knowledge.sources.base import (
    DEFAULT_MAX_BYTES,
    BadContent,
    SourceError,
    SourceItem,
    check_text,
    decode_text,
    make_document,
    parse_datetime,
)
from connectors.knowledge.sources.html_text import html_to_text

__all__ = ["ExportSource"]

FIELDS = ("id", "title", "body", "url", "section", "updated_at", "domain", "language")
_LOOKS_LIKE_HTML = re.compile(r"<(p|div|h[1-6]|ul|ol|li|table|br|span|a)\b", re.IGNORECASE)


class ExportSource:
    """Rows of one export file; `kind` is json, jsonl or csv (else inferred from the extension)."""

    def __init__(
        self, path: Path, domain: str = "general", kind: str | None = None, max_bytes: int = 200 * 1024 * 1024
    ) -> None:
        self.path = Path(path).resolve()
        self.domain = domain
        self.kind = kind or _kind_of(self.path)
        # a whole help center in one file: larger than one article's limit
        self.max_bytes = max(max_bytes, DEFAULT_MAX_BYTES)
        self._complete = False

    @property
    def name(self) -> str:
        return f"export:{self.path}"

    @property
    def complete(self) -> bool:
        return self._complete

    def estimate(self) -> int | None:
        return None

    async def documents(self) -> AsyncIterator[SourceItem]:
        self._complete = False
        try:
            rows = await asyncio.to_thread(self._rows)
        except BadContent as exc:
            yield SourceError(self.path.name, str(exc))
            return  # an unreadable file lists nothing: not complete, so nothing is deleted
        for number, row in rows:
            location = f"{self.path.name} row {number}"
            if isinstance(row, BadContent):
                yield SourceError(location, str(row))
                continue
            doc_id = None
            try:
                doc_id = _text(row, "id") or _text(row, "url")
                if not doc_id:
                    raise BadContent("needs an `id` or a `url` to identify the article")
                yield self._document(row, doc_id)
            except BadContent as exc:
                yield SourceError(location, str(exc), doc_id=doc_id)
        self._complete = True

    def _document(self, row: dict[str, Any], doc_id: str) -> Any:
        title = _text(row, "title")
        if not title:
            raise BadContent("field `title` is missing or empty")
        body = _text(row, "body")
        if not body:
            raise BadContent("field `body` is missing or empty")
        try:
            check_text(body)
        except BadContent as exc:
            raise BadContent(f"field `body` {exc}") from None
        if _LOOKS_LIKE_HTML.search(body):
            body = html_to_text(body).text
        url = _text(row, "url")
        if url and not re.match(r"^https?://", url):
            raise BadContent(f"field `url`: {url!r} is not an http(s) URL")
        return make_document(
            doc_id=doc_id,
            title=title,
            body=body,
            url=url,
            section=_text(row, "section"),
            domain=_text(row, "domain") or self.domain,
            language=_text(row, "language"),
            updated_at=parse_datetime(row.get("updated_at"), "field `updated_at`"),
            source=self.name,
        )

    def _rows(self) -> list[tuple[int, dict[str, Any] | BadContent]]:
        size = self.path.stat().st_size
        if size > self.max_bytes:
            raise BadContent(f"{size / 1e6:.1f} MB, over the limit of {self.max_bytes / 1e6:.1f} MB")
        text = decode_text(self.path.read_bytes())
        if self.kind == "csv":
            return list(_csv_rows(text))
        if self.kind == "jsonl":
            return list(_jsonl_rows(text))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadContent(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        if isinstance(data, dict):  # {"articles": [...]}: the one list inside
            lists = [value for value in data.values() if isinstance(value, list)]
            if len(lists) != 1:
                raise BadContent("a JSON export is an array of articles (or an object holding one)")
            data = lists[0]
        if not isinstance(data, list):
            raise BadContent("a JSON export is an array of articles")
        return [(n, _row(item)) for n, item in enumerate(data, start=1)]


def _kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "json"


def _row(item: object) -> dict[str, Any] | BadContent:
    if not isinstance(item, dict):
        return BadContent(f"an article is an object of fields, not {type(item).__name__}")
    return {key.strip().lower(): value for key, value in item.items() if isinstance(key, str)}


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | BadContent]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, _row(json.loads(line))
        except json.JSONDecodeError as exc:
            yield number, BadContent(f"not valid JSON (column {exc.colno}: {exc.msg})")


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | BadContent]]:
    # large article bodies exceed csv's default field limit of 128 KiB
    csv.field_size_limit(16 * 1024 * 1024)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        return
    missing = {"title", "body"} - {name.strip().lower() for name in reader.fieldnames}
    if missing:
        raise BadContent(f"the CSV header has no column {', '.join(sorted(missing))}")
    number = 0  # articles are numbered from 1 after the header, as in a JSON array
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield number, BadContent(f"not valid CSV (line {reader.line_num}): {exc}")
            return
        if None in row:
            yield number, BadContent("more cells than the header has columns")
            continue
        yield number, _row(row)


def _text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadContent(f"field `{name}` is {type(value).__name__}, not text")
    return value.strip() or None
