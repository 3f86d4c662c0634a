"""Structure-aware chunking of a Markdown `KnowledgeDocument` into `Chunk`s.

The body is read as blocks: headings, paragraphs, lists, tables and fenced code. Blocks are packed
in order into chunks of about `target_tokens`, never more than `max_tokens`:

- a heading starts a new chunk when the chunk so far is already past `min_tokens`, so a chunk
  tends to be one section, yet a run of tiny sections (three bullets each) shares a chunk instead
  of making fragments too short to embed well; a heading is never left last in a chunk;
- a list or a table stays whole when it fits in `max_tokens`; a longer one is split between items
  or rows, and each piece of a table repeats its header row so it still reads as a table;
- only a paragraph longer than `max_tokens` is cut inside: between sentences, or between words
  for a run-on sentence, with `overlap_tokens` of the previous piece repeated so a fact at the cut
  is whole in one of the two.

Each chunk carries the heading path above its first block (`headings`) and the document's title;
headings that begin inside a chunk stay in its text as Markdown lines. `contextual_text` is what
retrievers should index and embed: title and heading path first, because a chunk's own words
rarely name the product it is about (measured: see README, "Knowledge: retrieval quality").

Sizes are counted by `count_tokens`: by default a fast approximation of a WordPiece count (words and
punctuation marks), or pass a real tokenizer's counter. Same document and config, same chunks and
`chunk_id`s (doc_id, ordinal and a hash of the text).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.knowledge import Chunk, KnowledgeDocument

__all__ = [
    "Block",
    "ChunkingConfig",
    "approx_token_count",
    "chunk_document",
    "chunk_id",
    "contextual_text",
    "parse_blocks",
]

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_TABLE_ROW = re.compile(r"^\s*\|")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def approx_token_count(text: str) -> int:
    """Words and punctuation marks: close to a WordPiece count for English prose, and fast."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class ChunkingConfig:
    target_tokens: int = 200
    max_tokens: int = 256
    """Hard ceiling; the embedder truncates past its own limit (256 for all-MiniLM-L6-v2)."""
    min_tokens: int = 60
    """A heading starts a new chunk only once the current one has this much."""
    overlap_tokens: int = 32
    """Repeated between the pieces of a paragraph too long for one chunk."""
    count_tokens: Callable[[str], int] = field(default=approx_token_count, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_tokens <= self.target_tokens <= self.max_tokens:
            raise ValueError("need 0 < min_tokens <= target_tokens <= max_tokens")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError("overlap_tokens must be below half of max_tokens")


@dataclass(frozen=True)
class Block:
    """A run of Markdown lines that belong together: kind is heading, paragraph, list, table or code."""

    kind: str
    lines: tuple[str, ...]
    headings: tuple[str, ...]
    """The heading path this block lies under (a heading block: the path it opens, itself included)."""

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def parse_blocks(body: str) -> list[Block]:
    """The body's blocks in order, each with the heading path it lies under."""
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0

    def current() -> tuple[str, ...]:
        return tuple(title for _, title in path)

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2).strip()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
            blocks.append(Block("heading", (line.rstrip(),), current()))
            i += 1
            continue
        if _FENCE.match(line):
            fence = _FENCE.match(line).group(1)  # type: ignore[union-attr]
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                j += 1
            blocks.append(Block("code", tuple(lines[i : j + 1]), current()))
            i = j + 1
            continue
        if _TABLE_ROW.match(line):
            j = i
            while j < len(lines) and _TABLE_ROW.match(lines[j]):
                j += 1
            blocks.append(Block("table", tuple(x.rstrip() for x in lines[i:j]), current()))
            i = j
            continue
        if _LIST_ITEM.match(line):
            j = i + 1
            # an item's continuation lines are indented; a blank line followed by another item continues the list
            while j < len(lines):
                nxt = lines[j]
                continues = _LIST_ITEM.match(nxt) or (nxt.strip() and nxt[:1] in (" ", "\t"))
                gap_then_item = not nxt.strip() and j + 1 < len(lines) and _LIST_ITEM.match(lines[j + 1])
                if not (continues or gap_then_item):
                    break
                j += 1
            blocks.append(Block("list", tuple(x.rstrip() for x in lines[i:j] if x.strip()), current()))
            i = j
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() and not _starts_block(lines[j]):
            j += 1
        blocks.append(Block("paragraph", tuple(x.rstrip() for x in lines[i:j]), current()))
        i = j
    return blocks


def _starts_block(line: str) -> bool:
    return bool(_HEADING.match(line) or _FENCE.match(line) or _TABLE_ROW.match(line) or _LIST_ITEM.match(line))


def _split_block(block: Block, config: ChunkingConfig) -> list[Block]:
    """A block too long for one chunk, as pieces that each fit (see the module's rules)."""
    count = config.count_tokens
    if count(block.text) <= config.max_tokens:
        return [block]
    if block.kind in ("list", "table", "code"):
        # between items (an item with its continuation lines) or rows; a table's pieces repeat its header
        header: tuple[str, ...] = ()
        units: list[tuple[str, ...]] = []
        lines = list(block.lines)
        if block.kind == "table" and len(lines) > 2 and re.match(r"^\s*\|?\s*:?-{2,}", lines[1]):
            header, lines = tuple(lines[:2]), lines[2:]
        for line in lines:
            if block.kind == "list" and units and not _LIST_ITEM.match(line):
                units[-1] = (*units[-1], line)
            else:
                units.append((line,))
        pieces: list[Block] = []
        piece: list[str] = list(header)
        for unit in units:
            candidate = piece + list(unit)
            if len(piece) > len(header) and count("\n".join(candidate)) > config.max_tokens:
                pieces.append(Block(block.kind, tuple(piece), block.headings))
                piece = [*header, *unit]
            else:
                piece = candidate
        if len(piece) > len(header):
            pieces.append(Block(block.kind, tuple(piece), block.headings))
        # a single item or row longer than max_tokens is cut as prose
        return [p for piece_block in pieces for p in _split_prose(piece_block, config)]
    return _split_prose(block, config)


def _split_prose(block: Block, config: ChunkingConfig) -> list[Block]:
    count = config.count_tokens
    text = block.text
    if count(text) <= config.max_tokens:
        return [block]
    units = [s for s in _SENTENCE_END.split(text) if s.strip()]
    if any(count(u) > config.max_tokens for u in units):
        # a run-on sentence: fall back to words
        units = text.split()
    pieces: list[Block] = []
    current: list[str] = []
    for unit in units:
        if current and count(" ".join([*current, unit])) > config.target_tokens:
            pieces.append(Block(block.kind, (" ".join(current),), block.headings))
            # overlap: the last units of this piece, up to overlap_tokens, start the next one
            carried: list[str] = []
            for previous in reversed(current):
                if count(" ".join([previous, *carried])) > config.overlap_tokens:
                    break
                carried.insert(0, previous)
            current = carried
        current.append(unit)
    if current:
        pieces.append(Block(block.kind, (" ".join(current),), block.headings))
    return pieces


def chunk_id(doc_id: str, ordinal: int, text: str) -> str:
    """`doc_id#ordinal-hash`: stable for the same text at the same place, new when either changes."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"{doc_id}#{ordinal}-{digest}"


def chunk_document(doc: KnowledgeDocument, config: ChunkingConfig | None = None) -> list[Chunk]:
    """The document's chunks in reading order (ordinal 0, 1, ...); an empty body gives none."""
    config = config or ChunkingConfig()
    count = config.count_tokens
    blocks = [piece for block in parse_blocks(doc.body) for piece in _split_block(block, config)]
    groups: list[list[Block]] = []
    current: list[Block] = []
    size = 0
    for block in blocks:
        tokens = count(block.text)
        # the heading lines at the end of the chunk so far, which must move with what follows them
        trailing = 0
        while trailing < len(current) and current[-1 - trailing].kind == "heading":
            trailing += 1
        content = size - sum(count(b.text) for b in current[len(current) - trailing :]) if trailing else size
        starts_section = block.kind == "heading" and trailing == 0 and content >= config.min_tokens
        too_big = current and size + tokens > config.max_tokens
        only_headings = trailing == len(current)
        # a chunk of headings alone is never closed: they stay with the content that follows them
        if not only_headings and (
            starts_section or too_big or (size >= config.target_tokens and block.kind != "heading")
        ):
            carried = current[len(current) - trailing :] if trailing else []
            groups.append(current[: len(current) - len(carried)])
            current = list(carried)
            size = sum(count(b.text) for b in current)
        current.append(block)
        size += tokens
    if current:
        groups.append(current)

    chunks: list[Chunk] = []
    for group in groups:
        if all(b.kind == "heading" for b in group) and chunks:
            continue  # headings with no content under them (the document's last lines)
        text = "\n\n".join(b.text for b in group).strip()
        if not text:
            continue
        first = group[0]
        # a chunk opening with a heading lies under that heading's parents; the heading itself is in its text
        headings = list(first.headings[:-1] if first.kind == "heading" else first.headings)
        ordinal = len(chunks)
        chunks.append(
            Chunk(
                chunk_id=chunk_id(doc.doc_id, ordinal, text),
                doc_id=doc.doc_id,
                ordinal=ordinal,
                text=text,
                headings=headings,
                title=doc.title,
                url=doc.url,
                section=doc.section,
                domain=doc.domain,
                language=doc.language,
                content_hash=doc.content_hash,
            )
        )
    return chunks


def contextual_text(chunk: Chunk) -> str:
    """What to index and embed for a chunk: the title, the heading path, then the text."""
    context = [chunk.title, *chunk.headings]
    head = " > ".join(part for part in context if part)
    return f"{head}\n{chunk.text}" if head else chunk.text
