"""Micro-benchmark of the guard's input screen: mean microseconds per message over the injection suite.

    PYTHONPATH=. python bench/policy_bench.py [--rounds 50]

Runs `screen_input` over every message in tests/support/data/injection_suite.yaml (adversarial, abusive,
benign, Scunthorpe) and over the 4,514 Bitext requests, after one warm-up pass (the word list loads lazily).
Also prints the suite results (caught / false positives) so README figures come from one run.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import yaml

from operators.policy import screen_input

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "operators" / "data" / "injection_suite.yaml"
BITEXT = ROOT / "datasets" / "bitext-customer-support" / "bitext_customer_support_4514.csv"


def mean_us(texts: list[str], rounds: int) -> tuple[float, float]:
    """Mean and best per-message cost in µs over `rounds` passes."""
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            screen_input(text)
        per_round.append((time.perf_counter() - start) / len(texts) * 1e6)
    return statistics.mean(per_round), min(per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()

    suite = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    adversarial = [t for items in suite["adversarial"].values() for t in items]
    abusive = [t for items in suite["abusive"].values() for t in items]
    benign = suite["benign"] + suite["scunthorpe"]
    everything = adversarial + abusive + benign
    for text in everything:
        screen_input(text)  # warm-up

    caught = sum(1 for t in adversarial if (f := screen_input(t)) and f.kind == "prompt_injection")
    abusive_caught = sum(1 for t in abusive if (f := screen_input(t)) and f.kind in ("profanity", "abuse"))
    false_pos = sum(1 for t in benign if screen_input(t) is not None)
    print(f"adversarial caught {caught}/{len(adversarial)}, profanity/abuse caught {abusive_caught}/{len(abusive)}, "
          f"benign false positives {false_pos}/{len(benign)}")  # fmt: skip

    for name, texts in (("suite, all", everything), ("suite, adversarial", adversarial), ("suite, benign", benign)):
        mean, best = mean_us(texts, args.rounds)
        print(f"{name:<22} {len(texts):>5} msgs  mean {mean:7.1f} µs/msg  (best round {best:.1f})")
    if BITEXT.exists():
        with BITEXT.open(encoding="utf-8") as f:
            bitext = [row["instruction"] for row in csv.DictReader(f)]
        mean, best = mean_us(bitext, max(1, args.rounds // 10))
        flagged = [screen_input(t) for t in bitext]
        injection = sum(1 for f in flagged if f is not None and f.kind == "prompt_injection")
        profanity = sum(1 for f in flagged if f is not None and f.kind != "prompt_injection")
        print(f"{'bitext requests':<22} {len(bitext):>5} msgs  mean {mean:7.1f} µs/msg  (best round {best:.1f}); "
              f"injection findings {injection}, profanity/abuse {profanity}")  # fmt: skip


if __name__ == "__main__":
    main()
