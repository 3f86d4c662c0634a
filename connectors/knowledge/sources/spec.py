"""A configured knowledge source: what `supportflow kb ingest` is given, and how often `kb sync` repeats it.

Kept free of the ingest machinery (numpy, asyncpg, the embedder, the crawler): `Settings` validates
these specs, and every command loads settings.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from connectors.knowledge.sources.base import Source

__all__ = ["KINDS", "MIN_EVERY", "KnowledgeSourceSpec", "SourceKind", "infer_kind", "make_source", "parse_every"]

SourceKind = Literal["folder", "export", "site"]
KINDS: tuple[SourceKind, ...] = ("folder", "export", "site")
EXPORT_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv"}
# a sync reads the whole source (a site: every page, at `rate`); more often than this only loads it
MIN_EVERY = timedelta(minutes=1)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(value: object) -> object:
    """'90s', '15m', '6h', '1d' (or a bare number of seconds) as a timedelta; other forms go to pydantic."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smhd]?)\s*", value.lower())
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
    return value


class KnowledgeSourceSpec(BaseModel):
    """One source to keep in the knowledge base, and how often to read it again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, description="a folder, an export file (.json, .jsonl, .csv) or a site URL")
    kind: SourceKind | None = Field(default=None, description="folder, export or site; unset: inferred as kb ingest")
    domain: str = Field(default="general", min_length=1)
    every: timedelta = Field(default=timedelta(hours=1), description="'30m', '6h', '1d' or seconds; at least 1m")
    max_pages: int = Field(default=200, ge=1, description="a site: the most pages to fetch")
    rate: float = Field(default=2.0, ge=0.01, description="a site: requests per second, at most")

    @field_validator("every", mode="before")
    @classmethod
    def _every_with_a_unit(cls, value: object) -> object:
        return parse_every(value)

    @field_validator("every")
    @classmethod
    def _every_is_long_enough(cls, value: timedelta) -> timedelta:
        if value < MIN_EVERY:
            raise ValueError(f"every must be at least {MIN_EVERY.total_seconds():g} s, got {value.total_seconds():g} s")
        return value


def infer_kind(where: str) -> SourceKind:
    """What `where` is by its form: a URL is a site, a folder a folder, a .json/.jsonl/.csv file an export."""
    if where.startswith(("http://", "https://")):
        return "site"
    if Path(where).is_dir():
        return "folder"
    if Path(where).suffix.lower() in EXPORT_SUFFIXES:
        return "export"
    raise ValueError(
        f"cannot tell what {where} is: give a folder, a .json/.jsonl/.csv export, or an http(s) URL (or say the kind)"
    )


def make_source(where: str, kind: str | None, domain: str, max_pages: int = 200, rate: float = 2.0) -> Source:
    """The source `where` names; ValueError when the kind is unknown or the source is not there."""
    from connectors.knowledge.sources.export import ExportSource
    from connectors.knowledge.sources.folder import FolderSource
    from connectors.knowledge.sources.website import CrawlSettings, WebsiteSource

    kind = kind or infer_kind(where)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind}; choose {', '.join(KINDS)}")
    if kind == "site":
        return WebsiteSource(where, domain=domain, settings=CrawlSettings(max_pages=max_pages, rate=rate))
    path = Path(where)
    if kind == "folder":
        if not path.is_dir():
            raise ValueError(f"{where} is not a folder")
        return FolderSource(path, domain=domain)
    if not path.is_file():
        raise ValueError(f"{where} is not a file")
    return ExportSource(path, domain=domain)
