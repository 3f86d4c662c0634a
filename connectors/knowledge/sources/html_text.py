"""HTML to Markdown-like text with the standard library's `html.parser`: headings stay `#` lines,
lists `-` items, tables pipe rows, so the chunker and the full-text search see the structure.

No HTML library is a dependency of the project, and this needs none: help-center pages are
simple. Page furniture (scripts, styles, navigation, header, footer, asides, forms) is dropped;
a page with a `<main>` or `<article>` keeps only that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

__all__ = ["HtmlPage", "html_to_text"]

_SKIP = {"script", "style", "noscript", "template", "svg", "iframe", "object", "canvas", "form", "button", "select"}
_FURNITURE = {"nav", "header", "footer", "aside"}
_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "blockquote",
    "figure",
    "figcaption",
    "dl",
    "dt",
    "dd",
    "address",
    "details",
    "summary",
    "hr",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


@dataclass
class HtmlPage:
    title: str | None
    text: str
    canonical: str | None = None
    language: str | None = None
    links: list[str] = field(default_factory=list)


class _Scan(HTMLParser):
    """First pass: is there a main region, what is the title, the canonical URL, the language."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.has_main = False
        self.title: str | None = None
        self.h1: str | None = None
        self.canonical: str | None = None
        self.language: str | None = None
        self._in: str | None = None
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("main", "article") or values.get("role") == "main":
            self.has_main = True
        if tag == "html" and values.get("lang"):
            self.language = (values["lang"] or "").split("-")[0].lower() or None
        if tag == "link" and "canonical" in (values.get("rel") or "").lower().split() and values.get("href"):
            self.canonical = values["href"]
        if tag in ("title", "h1") and self._in is None:
            self._in, self._buffer = tag, []

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            text = " ".join("".join(self._buffer).split())
            if tag == "title" and self.title is None and text:
                self.title = text
            if tag == "h1" and self.h1 is None and text:
                self.h1 = text
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._buffer.append(data)


class _Render(HTMLParser):
    def __init__(self, main_only: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.main_only = main_only
        self.out: list[str] = []
        self.links: list[str] = []
        self._skip = 0  # depth inside dropped elements
        self._main = 0  # depth inside the main region
        self._pre = 0
        self._lists: list[list[int]] = []  # per open list: [ordered?, counter]
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, dropped it, opened the main region)

    # where text goes: into a table cell being read, or the output
    def _emit(self, text: str) -> None:
        if self._cell is not None:
            self._cell.append(text)
        else:
            self.out.append(text)

    def _visible(self) -> bool:
        return self._skip == 0 and (not self.main_only or self._main > 0)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        opens_main = tag in ("main", "article") or values.get("role") == "main"
        drops = tag in _SKIP or tag in _FURNITURE or tag in ("head", "title") or "hidden" in values
        if tag not in _VOID:
            self._stack.append((tag, drops, opens_main))
        if opens_main:
            self._main += 1
        if drops:
            self._skip += 1
            return
        if not self._visible():
            return
        if tag in _HEADINGS:
            self._emit("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag in ("ul", "ol"):
            self._lists.append([tag == "ol", 0])
            self._emit("\n")
        elif tag == "li":
            indent = "  " * max(0, len(self._lists) - 1)
            if self._lists and self._lists[-1][0]:
                self._lists[-1][1] += 1
                self._emit(f"\n{indent}{self._lists[-1][1]}. ")
            else:
                self._emit(f"\n{indent}- ")
        elif tag == "table":
            self._table = []
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "br":
            self._emit("\n")
        elif tag == "pre":
            self._pre += 1
            self._emit("\n\n```\n")
        elif tag in _BLOCK:
            self._emit("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # tolerate unclosed tags: close everything opened since the matching start tag
        if not any(open_tag == tag for open_tag, _, _ in self._stack):
            return
        while self._stack:
            open_tag, dropped, opened_main = self._stack.pop()
            self._close(open_tag, dropped, opened_main)
            if open_tag == tag:
                break

    def _close(self, tag: str, dropped: bool, opened_main: bool) -> None:
        if dropped:
            self._skip -= 1
            return
        visible = self._visible()
        if opened_main:
            self._main -= 1
        if not visible:
            return
        if tag in _HEADINGS:
            self._emit("\n\n")
        elif tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._emit("\n\n")
        elif tag in ("td", "th") and self._table is not None and self._cell is not None:
            text = " ".join("".join(self._cell).split()).replace("|", "\\|")
            self._cell = None
            if not self._table:
                self._table.append([])
            self._table[-1].append(text)
        elif tag == "table" and self._table is not None:
            rows = [row for row in self._table if any(row)]
            self._table = None
            if rows:
                width = max(len(row) for row in rows)
                lines = ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
                lines.insert(1, "|" + " --- |" * width)
                self._emit("\n\n" + "\n".join(lines) + "\n\n")
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._emit("\n```\n\n")
        elif tag in _BLOCK:
            self._emit("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._visible():
            return
        if self._pre:
            self._emit(data)
        else:
            self._emit(re.sub(r"\s+", " ", data))


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.split("\n")]
    # a line of spaces left between blocks is a blank line; at most one blank line in a row
    tidy = re.sub(r"\n{3,}", "\n\n", "\n".join(line if line.strip() else "" for line in lines))
    return "\n".join(line.lstrip(" ") if not line.startswith("  ") else line for line in tidy.split("\n")).strip()


def html_to_text(html: str) -> HtmlPage:
    """The page's readable text as Markdown-like lines, with its title, canonical URL, language
    and links (for a crawler)."""
    scan = _Scan()
    scan.feed(html)
    scan.close()
    render = _Render(main_only=scan.has_main)
    render.feed(html)
    render.close()
    return HtmlPage(
        title=scan.h1 or scan.title,  # <title> often carries the site name too
        text=_tidy("".join(render.out)),
        canonical=scan.canonical,
        language=scan.language,
        links=render.links,
    )
