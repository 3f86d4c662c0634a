"""How fast is PII redaction? Texts per second of `PresidioRedactor.redact_many` by batch size.

Run: `.venv/bin/python bench/redaction_bench.py [--texts 1024] [--out bench/redaction_results.json]`.
The texts are Bitext customer-support utterances (the repository's copy), every other one with
PII appended (a name, an email, a phone number or a card number), so both the regex recognizers
and spaCy's NER do real work. Each batch size redacts the same texts after one warm-up pass;
the figure is the median of three passes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

from connectors.pii import PresidioRedactor
from pipelines.evaluation.provenance import source_state
from pipelines.runtime.settings import PROJECT_DIR

DATA = PROJECT_DIR / "datasets" / "bitext-customer-support" / "bitext_customer_support_4514.csv"
PII_TAILS = [
    " Thanks, John Smith",
    " You can email me at jane.doe@example.com",
    " Call me on +1 415 555 0134",
    " My card is 4111 1111 1111 1111",
    " This is Maria Garcia, my number is (415) 555-0199",
    " UK phone: +44 20 7946 0958",
]
BATCH_SIZES = (1, 8, 32, 128)


def load_texts(count: int) -> list[str]:
    with DATA.open(encoding="utf-8") as f:
        utterances = [row["instruction"] for row in csv.DictReader(f)]
    texts = []
    for i in range(count):
        text = utterances[(i * 7) % len(utterances)]
        texts.append(text + PII_TAILS[(i // 2) % len(PII_TAILS)] if i % 2 else text)
    return texts


def run_pass(redactor: PresidioRedactor, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        redactor.redact_many(texts[start : start + batch_size])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1024, help="texts per pass (default 1024)")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "redaction_results.json")
    args = parser.parse_args()

    texts = load_texts(args.texts)
    redactor = PresidioRedactor()
    started = time.perf_counter()
    redactor.warm_up()
    warm_up_s = time.perf_counter() - started
    redactor.redact_many(texts[:64])  # first-call costs (allocations, caches) out of the figures

    results = []
    for batch_size in BATCH_SIZES:
        seconds = statistics.median(run_pass(redactor, texts, batch_size) for _ in range(3))
        row = {
            "batch_size": batch_size,
            "texts": len(texts),
            "seconds": round(seconds, 3),
            "texts_per_s": round(len(texts) / seconds, 1),
            "ms_per_text": round(1000 * seconds / len(texts), 2),
        }
        results.append(row)
        print(f"batch {batch_size:>4}: {row['texts_per_s']:>7} texts/s  {row['ms_per_text']:>6} ms/text")

    report = {
        "command": f"python bench/redaction_bench.py --texts {args.texts}",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "versions": {p: version(p) for p in ("presidio-analyzer", "presidio-anonymizer", "spacy")},
        "spacy_components": ["tok2vec", "ner"],
        "entities": redactor.entities,
        "score_threshold": redactor.score_threshold,
        "mean_text_chars": round(statistics.mean(len(t) for t in texts), 1),
        "share_with_pii": 0.5,
        "warm_up_s": round(warm_up_s, 2),
        "results": results,
    }
    report["measured_on"] = {**source_state(), "command": "python bench/redaction_bench.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
