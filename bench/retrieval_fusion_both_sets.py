"""Every fusion setting of the evaluation's grid on the help center and on banking at once, all queries.

    python bench/retrieval_fusion_both_sets.py BANKING_BEIR_FOLDER [--cache DIR]
        [--out bench/retrieval/fusion_both_sets.json]

`supportflow eval retrieval` tunes the fusion on one set's development half; this asks whether one
setting serves both sets: for each setting, nDCG@10 on all and held-out queries of each set, next to
each set's best single retriever. Same chunks, BM25 (word pairs), title lists and embedder as the
evaluation. Settings are sorted by their development halves only (the mean over the two sets of nDCG@10
divided by the set's best single retriever's, both on the development half); held-out and all are reported.
`production_choice` is the production retriever's default (`connectors/knowledge/retriever.py`
DEFAULT_FUSION): the highest sum of both development halves' nDCG@10 among the settings that lower neither
set's development figure below the previous default's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import (  # noqa: E402
    EvalOptions,
    default_fusion_grid,
    evaluate_rankings,
    load_beir,
    load_embedder,
    retrieve,
    split_queries,
)

EVAL_SET = ROOT / "pipelines" / "evaluation" / "data" / "help_center_eval"
PREVIOUS_DEFAULT = {"method": "rrf", "rrf_k": 5, "weights": {"dense": 0.6, "lexical": 0.4}}
"""DEFAULT_FUSION before the title lists (the help center's tuning, commit 1f30f9d)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("banking", type=Path)
    parser.add_argument("--cache", type=Path, help="passage-vector cache shared with `eval retrieval --cache`")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "fusion_both_sets.json")
    args = parser.parse_args()

    sets = {
        "help_center": load_beir(
            ROOT / "playbooks" / "help_center", EVAL_SET / "queries.jsonl", EVAL_SET / "qrels" / "test.tsv"
        ),
        "banking": load_beir(args.banking),
    }
    embedder = load_embedder("minilm", ROOT / "triton_models", threads=2)
    scores: dict[str, dict[str, Any]] = {}
    for name, beir in sets.items():
        run = retrieve(beir, embedder, EvalOptions(bigrams=True), cache_dir=args.cache)
        dev, held = split_queries(beir.queries)

        def ndcg(rankings: dict[str, list[str]], ids: list[str] | None = None) -> float:
            chosen = rankings if ids is None else {q: rankings[q] for q in ids}
            return round(evaluate_rankings(chosen, beir.qrels)["ndcg@10"], 4)  # noqa: B023 (used at once)

        row: dict[str, Any] = {}
        for retriever in ("lexical", "dense"):
            rankings = run.doc_rankings(retriever)
            row[retriever] = {"all": ndcg(rankings), "dev": ndcg(rankings, dev), "held_out": ndcg(rankings, held)}
        for config in default_fusion_grid():
            rankings = run.doc_rankings("hybrid", config)
            row[json.dumps(config.describe(), sort_keys=True)] = {
                "all": ndcg(rankings),
                "dev": ndcg(rankings, dev),
                "held_out": ndcg(rankings, held),
            }
        scores[name] = row

    best = {name: max(row["lexical"]["all"], row["dense"]["all"]) for name, row in scores.items()}
    best_dev = {name: max(row["lexical"]["dev"], row["dense"]["dev"]) for name, row in scores.items()}
    settings = []
    for key in scores["help_center"]:
        if key in ("lexical", "dense"):
            continue
        entry: dict[str, Any] = {"fusion": json.loads(key)}
        for name in sets:
            entry[name] = scores[name][key]
        entry["at_least_best_single_on_both"] = all(scores[n][key]["all"] >= best[n] for n in sets)
        entry["mean_ratio_to_best_single"] = round(sum(scores[n][key]["all"] / best[n] for n in sets) / len(sets), 4)
        entry["dev_mean_ratio_to_best_single"] = round(
            sum(scores[n][key]["dev"] / best_dev[n] for n in sets) / len(sets), 4
        )
        settings.append(entry)
    settings.sort(key=lambda e: -e["dev_mean_ratio_to_best_single"])
    # the production default: the highest sum of the two development halves' nDCG@10 among the settings that
    # lower neither set's development figure below the previous default's
    previous = next((e for e in settings if e["fusion"] == PREVIOUS_DEFAULT), None)
    floor = {n: previous[n]["dev"] if previous else 0.0 for n in sets}
    eligible = [e for e in settings if all(e[n]["dev"] >= floor[n] for n in sets)]
    choice = max(eligible, key=lambda e: (sum(e[n]["dev"] for n in sets), -settings.index(e)), default=None)
    out = {
        **source_state(),
        "command": "python bench/retrieval_fusion_both_sets.py " + " ".join(sys.argv[1:]),
        "model": embedder.model_id,
        "single": {name: {r: scores[name][r] for r in ("lexical", "dense")} for name in sets},
        "production_choice": {
            "rule": "max sum of dev nDCG@10 over both sets, each set's dev at least the previous default's",
            "previous_default": previous,
            "choice": choice,
        },
        "settings": settings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for entry in settings[:8]:
        print(json.dumps(entry))
    print("production choice:", json.dumps(choice))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
