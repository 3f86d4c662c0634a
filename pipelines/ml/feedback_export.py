"""`supportflow feedback export`: the humans' intent corrections as training rows for the intent model.

The rows come from the conversation store (feedback joined with the corrected message's text),
one per message with its latest correction, written as a CSV of `text,label` that
`supportflow nlu train --extra-train FILE` adds to the training split. `nlu train` refuses labels
its training data lacks, so by default only labels the current model knows are written; the
others are counted and named.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ExportResult", "model_labels", "write_training_csv"]


@dataclass
class ExportResult:
    written: int = 0
    unknown_labels: Counter[str] = field(default_factory=Counter)


def model_labels(version_dir: Path) -> set[str]:
    """The intents a model version was trained on (its `labels.json`)."""
    path = Path(version_dir) / "labels.json"
    return set(json.loads(path.read_text(encoding="utf-8"))["labels"])


def write_training_csv(
    rows: Iterable[Mapping[str, Any]], out: Path, known_labels: set[str] | None = None
) -> ExportResult:
    """Write `text,label` rows (only labels in `known_labels`, when given); returns what was written and left out."""
    result = ExportResult()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for row in rows:
            text, label = str(row["text"]).strip(), str(row["label"]).strip()
            if not text or not label:
                continue
            if known_labels is not None and label not in known_labels:
                result.unknown_labels[label] += 1
                continue
            writer.writerow([text, label])
            result.written += 1
    return result
