"""Entity extraction precision/recall/F1 per type against the Bitext entity spans, and ms per message.

Run (from the repository root):

    PYTHONPATH=. python bench/entity_eval.py [--limit N] [--out bench/entity_results.json]

Gold spans are the CSV's `start_offset`/`end_offset` sliced from the utterance (its `entity_value` column is
unreliable: lower/upper case changed, leading zeros or digits dropped, so the offsets are the truth). Bitext
annotates at most one entity per utterance, and only some types; those are mapped onto ours (`BITEXT_TYPES`) and
only our types that have a Bitext counterpart are scored. A prediction counts as a true positive under "exact"
when type and span are identical, under "overlap" when the type matches and the spans share a character.
Every utterance is scored, including the 2,800 with no entity, so a spurious person/place there is a false positive;
but Bitext leaves many real amounts in refund questions unannotated, so false positives in rows with no annotation
are also counted apart (`fp_in_unannotated_rows`, `precision_in_annotated_rows`) for the reader to judge.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operators.nlu.entities import EntityExtractor

BITEXT_CSV = Path(__file__).resolve().parents[1] / "datasets/bitext-customer-support/bitext_customer_support_4514.csv"
BITEXT_TYPES: dict[str, str] = {
    "order_id": "order_number",
    "invoice_id": "invoice_number",
    "refund_amount": "amount",
    "person_name": "person",
    "delivery_city": "place",
    "delivery_country": "place",
}
"""Bitext entity type -> ours. `account_type` (free/gold/platinum account) has no counterpart and is not scored."""
SCORED_TYPES: tuple[str, ...] = tuple(dict.fromkeys(BITEXT_TYPES.values()))


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    fp_unannotated: int = 0
    """False positives in utterances Bitext annotated with nothing at all: some are real entities it skipped."""

    def as_dict(self) -> dict[str, float]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        annotated_fp = self.fp - self.fp_unannotated
        p_annotated = self.tp / (self.tp + annotated_fp) if self.tp + annotated_fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "fp_in_unannotated_rows": self.fp_unannotated,
            "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
            "precision_in_annotated_rows": round(p_annotated, 4),
        }  # fmt: skip


@dataclass
class Report:
    exact: dict[str, Counts] = field(default_factory=lambda: {t: Counts() for t in SCORED_TYPES})
    overlap: dict[str, Counts] = field(default_factory=lambda: {t: Counts() for t in SCORED_TYPES})
    errors: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self, mode: str) -> dict[str, dict[str, float]]:
        return {t: c.as_dict() for t, c in getattr(self, mode).items()}


def load_rows(path: Path = BITEXT_CSV) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def gold_span(row: dict[str, str]) -> tuple[str, int, int] | None:
    """(our type, start, end) of the row's annotated entity, end clipped to the text (a few offsets overrun)."""
    kind = BITEXT_TYPES.get(row["entity_type"])
    if kind is None:
        return None
    text = row["instruction"]
    start, end = int(row["start_offset"]), min(int(row["end_offset"]), len(row["instruction"]))
    return (kind, start, end) if text[start:end].strip() else None


def score(rows: list[dict[str, str]], predictions: list[list[tuple[str, int, int]]], keep_errors: int = 40) -> Report:
    """Count true/false positives and misses per type, exact and overlapping spans."""
    report = Report()
    for row, predicted in zip(rows, predictions, strict=True):
        gold = gold_span(row)
        preds = [p for p in predicted if p[0] in SCORED_TYPES]
        for mode, same in (("exact", _same_span), ("overlap", _overlaps)):
            counts: dict[str, Counts] = getattr(report, mode)
            matched = False
            for p in preds:
                if gold is not None and not matched and p[0] == gold[0] and same(p, gold):
                    counts[p[0]].tp += 1
                    matched = True
                else:
                    counts[p[0]].fp += 1
                    counts[p[0]].fp_unannotated += not row["entity_type"]
            if gold is not None and not matched:
                counts[gold[0]].fn += 1
            if mode == "overlap" and (not matched and (gold or preds)) and len(report.errors) < keep_errors:
                text = row["instruction"]
                shown = gold and [gold[0], text[gold[1] : gold[2]]]
                predicted_text = [[p[0], text[p[1] : p[2]]] for p in preds]
                report.errors.append({"text": text, "gold": shown, "predicted": predicted_text})
    return report


def _same_span(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[1:] == b[1:]


def _overlaps(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def evaluate(rows: list[dict[str, str]], extractor: EntityExtractor | None = None) -> tuple[Report, float]:
    """Run the extractor over the rows in one batch; returns the report and milliseconds per message."""
    extractor = extractor or EntityExtractor()
    extractor.warm_up()
    texts = [row["instruction"] for row in rows]
    started = time.perf_counter()
    entities = extractor.extract_many(texts)
    ms = (time.perf_counter() - started) * 1000 / max(1, len(texts))
    return score(rows, [[(e.type, e.start, e.end) for e in es] for es in entities]), ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N rows (0: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "entity_results.json")
    args = parser.parse_args()
    rows = load_rows()[: args.limit or None]

    extractor = EntityExtractor()
    started = time.perf_counter()
    extractor.warm_up()
    warm_up_s = time.perf_counter() - started
    report, ms_batch = evaluate(rows, extractor)
    started = time.perf_counter()
    for row in rows[:500]:
        extractor.extract(row["instruction"])
    ms_single = (time.perf_counter() - started) * 1000 / min(500, len(rows))
    rules_only = EntityExtractor(use_spacy=False)
    _, ms_rules = evaluate(rows, rules_only)

    results = {
        "rows": len(rows),
        "gold_entities": {t: report.exact[t].tp + report.exact[t].fn for t in SCORED_TYPES},
        "exact": report.metrics("exact"),
        "overlap": report.metrics("overlap"),
        "ms_per_message": {
            "batch_extract_many": round(ms_batch, 3),
            "one_at_a_time_extract": round(ms_single, 3),
            "rules_and_dates_only": round(ms_rules, 3),
        },
        "warm_up_seconds": round(warm_up_s, 2),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "sample_errors": report.errors,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"{'type':16}{'exact P':>9}{'R':>7}{'F1':>7}{'overlap P':>11}{'R':>7}{'F1':>7}{'gold':>6}")
    for t in SCORED_TYPES:
        e, o = results["exact"][t], results["overlap"][t]
        print(
            f"{t:16}{e['precision']:9.3f}{e['recall']:7.3f}{e['f1']:7.3f}"
            f"{o['precision']:11.3f}{o['recall']:7.3f}{o['f1']:7.3f}{results['gold_entities'][t]:6d}"
        )
    print("ms/message:", results["ms_per_message"], f"warm-up {warm_up_s:.1f}s ->", args.out)


if __name__ == "__main__":
    main()
