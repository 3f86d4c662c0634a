"""The usage prior's input: how often each article was needed, read from a file a tenant already has.

`supportflow kb prior import FILE` takes either of two CSV (or, for a `.tsv` file, tab-separated) layouts,
told apart by the header:

- counts: `doc_id,uses` - one row per article (rows of the same article add up);
- links: a document column (`doc_id` or `corpus-id`) beside a question column (`ticket_id`, `conversation_id`,
  `query_id` or `query-id`), optionally `score`: one row per article a ticket needed, as a help desk exports
  the articles linked to its tickets, or a retrieval benchmark's qrels (rows with a score of 0 or less are
  skipped). An article counts each ticket once.

Count only the tickets you would train on: importing the questions you evaluate with makes the evaluation grade
itself (`supportflow eval retrieval --prior-from dev-qrels` learns the prior from the development half only).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["UsageFileError", "read_usage"]

DOCUMENT_COLUMNS = ("doc_id", "corpus-id")
QUESTION_COLUMNS = ("ticket_id", "conversation_id", "query_id", "query-id")
MAX_USES = 2**31 - 1


class UsageFileError(ValueError):
    """The file is not one of the two layouts, or a row is malformed (the message names the line)."""


def read_usage(path: Path) -> dict[str, int]:
    """doc_id -> uses, from a counts file or a links file (see the module's docstring)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            reader.fieldnames = header
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise UsageFileError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise UsageFileError(f"{path}: {exc}") from None
    document = next((c for c in DOCUMENT_COLUMNS if c in header), None)
    if document is None:
        raise UsageFileError(f"{path}: no document column ({' or '.join(DOCUMENT_COLUMNS)}) in the header {header}")
    if "uses" in header:
        return _counts(path, rows, document)
    question = next((c for c in QUESTION_COLUMNS if c in header), None)
    if question is None:
        raise UsageFileError(
            f"{path}: the header {header} has neither `uses` (counts) nor a question column "
            f"({', '.join(QUESTION_COLUMNS)}) for links"
        )
    return _links(path, rows, document, question, "score" in header)


def _counts(path: Path, rows: list[dict[str, str]], document: str) -> dict[str, int]:
    uses: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        doc = _document(path, line, row, document)
        raw = (row.get("uses") or "").strip()
        try:
            count = int(raw)
        except ValueError:
            raise UsageFileError(f"{path}:{line}: uses {raw!r} is not a whole number") from None
        if count < 1:
            raise UsageFileError(f"{path}:{line}: uses {count} is not positive")
        uses[doc] = min(MAX_USES, uses.get(doc, 0) + count)
    return uses


def _links(path: Path, rows: list[dict[str, str]], document: str, question: str, scored: bool) -> dict[str, int]:
    tickets: dict[str, set[str]] = {}
    for line, row in enumerate(rows, start=2):
        doc = _document(path, line, row, document)
        ticket = (row.get(question) or "").strip()
        if not ticket:
            raise UsageFileError(f"{path}:{line}: no {question}")
        if scored:
            raw = (row.get("score") or "").strip()
            try:
                score = float(raw)
            except ValueError:
                raise UsageFileError(f"{path}:{line}: score {raw!r} is not a number") from None
            if not math.isfinite(score):
                raise UsageFileError(f"{path}:{line}: score {raw!r} is not a finite number")
            if score <= 0:
                continue
        tickets.setdefault(doc, set()).add(ticket)
    return {doc: min(MAX_USES, len(found)) for doc, found in tickets.items()}


def _document(path: Path, line: int, row: dict[str, str], column: str) -> str:
    doc = (row.get(column) or "").strip()
    if not doc or "\x00" in doc or len(doc) > 1000:
        raise UsageFileError(f"{path}:{line}: {column} is empty, too long or holds a NUL byte")
    return doc
