"""Exact and near-duplicate detection between hand-written data sets.

Used to show that training texts were not copied or lightly paraphrased from evaluation texts. Texts
are normalised before comparing: lower case, `{placeholders}` and digit runs replaced by one token
each (an order number or template slot does not make two sentences different), punctuation dropped.
Two texts are near-duplicates when their normalised forms are at least `ratio` similar
(difflib) or share at least `jaccard` of their word sets.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

_PLACEHOLDER = re.compile(r"#?\{[^}]*\}")
_DIGITS = re.compile(r"#?\d+")
_HASH_RUN = re.compile(r"#( #)+")
_NON_WORD = re.compile(r"[^a-z0-9#' ]+")


def normalise(text: str) -> str:
    text = _PLACEHOLDER.sub(" # ", text.lower())
    text = _DIGITS.sub(" # ", text)
    text = " ".join(_NON_WORD.sub(" ", text).split())
    return _HASH_RUN.sub("#", text)  # "{qty} {item}" or "#{order}" is one slot, like one number


def csv_texts(path: Path, column: str = "text") -> list[str]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [row[column] for row in csv.DictReader(f) if row.get(column)]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def yaml_texts(paths: Iterable[Path], min_words: int = 2) -> list[str]:
    """Every string value of the YAML files with at least `min_words` words of letters: ids, tool names and
    bare template slots such as "{qty} {item}" are not phrasings."""
    out: list[str] = []
    for path in paths:
        for s in _strings(yaml.safe_load(Path(path).read_text(encoding="utf-8"))):
            if sum(1 for w in normalise(s).split() if re.search("[a-z]", w)) >= min_words:
                out.append(s)
    return out


def near_duplicates(
    texts: Iterable[str], others: Iterable[str], ratio: float = 0.85, jaccard: float = 0.8
) -> list[tuple[str, str]]:
    """(text, other) pairs that are equal or near-equal after normalisation."""
    prepared = [(o, normalise(o), set(normalise(o).split())) for o in others]
    pairs: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(autojunk=False)
    for text in texts:
        norm = normalise(text)
        words = set(norm.split())
        matcher.set_seq2(norm)  # difflib caches what it learns about the second sequence
        for other, other_norm, other_words in prepared:
            if not norm or not other_norm:
                continue
            union = words | other_words
            if norm == other_norm or (union and len(words & other_words) / len(union) >= jaccard):
                pairs.append((text, other))
                continue
            matcher.set_seq1(other_norm)
            # the quick ratios are upper bounds of ratio(): most pairs are rejected without the full match
            if matcher.real_quick_ratio() >= ratio and matcher.quick_ratio() >= ratio and matcher.ratio() >= ratio:
                pairs.append((text, other))
    return pairs
