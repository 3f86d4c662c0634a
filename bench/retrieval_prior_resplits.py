"""Is the usage prior's gain on banking a property of one split? The same measurement on random halves.

    python bench/retrieval_prior_resplits.py BANKING_BEIR_FOLDER [--cache DIR] [--splits 10]
        [--out bench/retrieval/banking_prior_resplits.json]

`supportflow eval retrieval --prior-from dev-qrels` learns the prior and tunes the fusion on one fixed half
(by a hash of the query ids) and reports the other. Here the queries are split at random `--splits` times
(seeded: `random_halves`); for each split the prior is learned from half A's qrels only, the fusion is tuned on A
twice (the evaluation's grid without the prior, and the grid times `PRIOR_WEIGHTS`) and both are scored on half B.
Same chunks, BM25 with word pairs, title lists and MiniLM as the evaluation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import (  # noqa: E402
    PRIOR_WEIGHTS,
    EvalOptions,
    default_fusion_grid,
    evaluate_rankings,
    load_beir,
    load_embedder,
    random_halves,
    retrieve,
    tune_fusion,
    usage_prior,
    with_prior_weights,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("banking", type=Path)
    parser.add_argument("--cache", type=Path, help="passage-vector cache shared with `eval retrieval --cache`")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "banking_prior_resplits.json")
    args = parser.parse_args()

    beir = load_beir(args.banking)
    embedder = load_embedder("minilm", ROOT / "triton_models", threads=args.threads)
    run = retrieve(beir, embedder, EvalOptions(bigrams=True), cache_dir=args.cache)
    grid = default_fusion_grid()
    with_prior = with_prior_weights(grid, PRIOR_WEIGHTS)
    rows: list[dict[str, Any]] = []
    for seed, (a, b) in enumerate(random_halves(beir.queries, args.splits)):

        def ndcg(config: Any, qids: list[str]) -> float:
            return round(evaluate_rankings(run.doc_rankings("hybrid", config, qids), beir.qrels)["ndcg@10"], 4)

        run.prior = []
        plain, _ = tune_fusion(run, a, grid)
        plain_b = ndcg(plain, b)
        run.prior = usage_prior(beir.qrels, a)  # half A only
        tuned, _ = tune_fusion(run, a, with_prior)
        row = {
            "seed": seed,
            "queries": {"a": len(a), "b": len(b)},
            "hybrid": {"fusion": plain.describe(), "ndcg@10_b": plain_b},
            "hybrid_prior": {"fusion": tuned.describe(), "ndcg@10_b": ndcg(tuned, b)},
            "popularity_alone_ndcg@10_b": round(
                evaluate_rankings({q: [d for d, _ in run.prior] for q in b}, beir.qrels)["ndcg@10"], 4
            ),
        }
        row["gain_b"] = round(row["hybrid_prior"]["ndcg@10_b"] - plain_b, 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    gains = [r["gain_b"] for r in rows]
    out = {
        **source_state(),
        "command": "python bench/retrieval_prior_resplits.py " + " ".join(sys.argv[1:]),
        "model": embedder.model_id,
        "prior_weights": list(PRIOR_WEIGHTS),
        "summary": {
            "splits": len(rows),
            "hybrid_b_mean": round(statistics.mean(r["hybrid"]["ndcg@10_b"] for r in rows), 4),
            "hybrid_prior_b_mean": round(statistics.mean(r["hybrid_prior"]["ndcg@10_b"] for r in rows), 4),
            "gain_b_mean": round(statistics.mean(gains), 4),
            "gain_b_min": min(gains),
            "gain_b_max": max(gains),
            "popularity_alone_b_mean": round(statistics.mean(r["popularity_alone_ndcg@10_b"] for r in rows), 4),
        },
        "splits": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["summary"]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
