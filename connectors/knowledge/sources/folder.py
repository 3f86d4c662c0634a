"""A folder of help articles: Markdown (with optional YAML front matter), HTML, plain text, PDF.

`doc_id` is the file's path relative to the folder, so a moved folder keeps its ids. Front matter
may set title, section, url, domain, updated_at and language; without a section the file's
folder names it (`billing/refunds.md` is in section "billing"), without a title the first `#`
heading or the file name does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from connectors.knowledge.sources.base import (
    DEFAULT_MAX_BYTES,
    BadContent,
    SourceError,
    SourceItem,
    decode_text,
    make_document,
    parse_datetime,
)
from connectors.knowledge.sources.html_text import html_to_text
from connectors.knowledge.sources.pdf_text import pdf_to_text
from schemas.knowledge import KnowledgeDocument

__all__ = ["FolderSource", "split_front_matter"]

MARKDOWN = {".md", ".markdown", ".mdx"}
HTML = {".html", ".htm"}
TEXT = {".txt", ".text"}
PDF = {".pdf"}
# a help center's folder holds its images, styles and data files (an intent map) too: not documents,
# and not errors either
ASSETS = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".ico", ".css", ".js", ".map", ".woff", ".woff2"}
ASSETS |= {".yaml", ".yml", ".json", ".toml"}
# the folder's own notes for its writers, not articles for customers
META_FILES = {"readme", "license", "licence", "contributing", "changelog"}
FRONT_MATTER_FIELDS = ("title", "section", "url", "domain", "updated_at", "language")

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(the YAML front matter as a mapping, the rest); no front matter gives an empty mapping."""
    found = _FRONT_MATTER.match(text)
    if found is None:
        return {}, text
    try:
        meta = yaml.safe_load(found.group(1))
    except yaml.YAMLError as exc:
        raise BadContent(f"front matter is not valid YAML: {str(exc).splitlines()[0]}") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise BadContent("front matter is not a mapping of fields")
    for name in ("title", "section", "url", "domain", "language"):
        if meta.get(name) is not None and not isinstance(meta[name], (str, int, float)):
            raise BadContent(f"front matter field {name!r} is not text")
    return meta, text[found.end() :]


def _first_heading(body: str) -> str | None:
    found = re.search(r"^#\s+(.+?)\s*#*\s*$", body, re.MULTILINE)
    return found.group(1) if found else None


def _humanise(stem: str) -> str:
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or stem


class FolderSource:
    """Every supported file under `root`, in path order; hidden files and folders are skipped."""

    def __init__(self, root: Path, domain: str = "general", max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root).resolve()
        self.domain = domain
        self.max_bytes = max_bytes
        self._complete = False

    @property
    def name(self) -> str:
        return f"folder:{self.root}"

    @property
    def complete(self) -> bool:
        return self._complete

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder")
        found = []
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if path.suffix.lower() in ASSETS or path.stem.lower() in META_FILES:
                continue
            found.append(path)
        return found

    def estimate(self) -> int | None:
        try:
            return len(self._files())
        except OSError:
            return None

    async def documents(self) -> AsyncIterator[SourceItem]:
        self._complete = False
        for path in await asyncio.to_thread(self._files):
            doc_id = path.relative_to(self.root).as_posix()
            try:
                yield await asyncio.to_thread(self._read, path, doc_id)
            except BadContent as exc:
                yield SourceError(doc_id, str(exc), doc_id=doc_id)
            except OSError as exc:
                yield SourceError(doc_id, f"cannot read: {exc.strerror or exc}", doc_id=doc_id)
        self._complete = True

    def _read(self, path: Path, doc_id: str) -> KnowledgeDocument:
        if path.is_symlink() and not path.resolve().is_relative_to(self.root):
            raise BadContent("a link to a file outside the folder")
        suffix = path.suffix.lower()
        if suffix not in MARKDOWN | HTML | TEXT | PDF:
            raise BadContent(f"not a supported kind of file ({suffix or 'no extension'}); use .md, .html, .txt, .pdf")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise BadContent(f"{size / 1e6:.1f} MB, over the limit of {self.max_bytes / 1e6:.1f} MB")
        data = path.read_bytes()
        folder = path.parent.relative_to(self.root)
        section = folder.name if folder.parts else None
        common: dict[str, Any] = {"doc_id": doc_id, "source": self.name, "domain": self.domain, "section": section}
        if suffix in PDF:
            title, body = pdf_to_text(data)
            return make_document(title=title or _humanise(path.stem), body=body, **common)
        text = decode_text(data)
        if suffix in HTML:
            page = html_to_text(text)
            return make_document(
                title=page.title or _humanise(path.stem), body=page.text, language=page.language, **common
            )
        if suffix in TEXT:
            return make_document(title=_humanise(path.stem), body=text, **common)
        meta, body = split_front_matter(text)
        given = {name: meta[name] for name in FRONT_MATTER_FIELDS if meta.get(name) not in (None, "")}
        return make_document(
            doc_id=doc_id,
            source=self.name,
            title=str(given.get("title") or _first_heading(body) or _humanise(path.stem)),
            body=body,
            url=str(given["url"]) if "url" in given else None,
            section=str(given.get("section") or section or "") or None,
            domain=str(given.get("domain") or self.domain),
            language=str(given["language"]) if "language" in given else None,
            updated_at=parse_datetime(given.get("updated_at")),
        )
