"""A learned fusion: a pointwise logistic regression over what each retriever says about a document, against the
grid-tuned fusion and the best single retriever, on the help center and banking. Measured only, not in the product.

    python bench/retrieval_learned_fusion.py [--banking /tmp/beir/banking] [--cache DIR] [--splits 10]
        [--threads 2] [--out bench/retrieval/learned_fusion.json]

Candidates: for each query, the documents of the chunks in its lexical or dense list (100 chunks each), the
documents the evaluation's fusion ranks. Features of a (query, document) pair, all known at query time from the
lists the evaluation produces (`retrieve`), for each list L of lexical and dense (chunks; a document stands where
its best chunk does) and title and title_dense (documents):
- `rr_L`: 1 / the document's rank among L's documents, 0 when L does not hold it;
- `mm_L`: its (best chunk's) score min-max scaled over L's scores, 0 when L does not hold it.
These 8 are the model (`ranks_scores`). A variant fixed with it before any run (`ranks_scores_raw`) adds four raw
scores: the best cosine of the document's chunks and log(1 + the best BM25 of its chunks), over all chunks, not
only the lists'; the title's cosine (the title_dense list's lowest when the list does not hold it) and log(1 +
the title's BM25) (0 when absent). Label: 1 when the qrels list the document (grade > 0). The fit is
`connectors.knowledge.confidence.fit_logistic`, the answerability model's (numpy, Newton's method, standardised
features, L2 1.0), every candidate row weighted alike; a query's documents are ranked by the linear score (ties:
by id) and scored by nDCG@10.

Trained on training halves only, scored on the other half:
- `fixed_split`: the evaluation's split (`split_queries`, by hash): trained on the development half, scored on
  the held-out half (and in-sample on development). `own`: one set's development half; `pooled`: both sets'
  development halves together, one model for both (what production could ship).
- `resplits`: the random halves of `bench/retrieval_help_center_resplits.py` (`random_halves`, seeds 0..N-1):
  `own` retrained on the set's half A, `pooled` on both sets' halves A of the same seed, scored on B. A model
  trained on the fixed development half is never scored on a random half (that half shares queries with it).
Beside them, on the same halves: the evaluation's grid tuned on the same training half (`hybrid`),
`DEFAULT_FUSION` (`production`), lexical and dense; the best single retriever is the better of the two on the
scored half. Nothing was tuned on held-out queries: the features, the fit and the variants are as written here
before the first run; no setting was changed after it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.knowledge.confidence import fit_logistic  # noqa: E402
from connectors.knowledge.retriever import DEFAULT_FUSION  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import (  # noqa: E402
    FusionTable,
    RetrievalRun,
    default_fusion_grid,
    documents_by_best_chunk,
    fusion_table,
    load_embedder,
    ndcg_at_k,
    per_query_ndcg,
    random_halves,
    retrieve,
    split_queries,
)

sys.path.insert(0, str(ROOT / "bench"))
from retrieval_help_center_resplits import OPTIONS, load_sets  # noqa: E402

LISTS = ("lexical", "dense", "title", "title_dense")
FEATURES = tuple(f"{kind}_{name}" for name in LISTS for kind in ("rr", "mm"))
RAW_FEATURES = ("dense_cosine", "lexical_bm25_log", "title_cosine", "title_bm25_log")
VARIANTS = {"ranks_scores": len(FEATURES), "ranks_scores_raw": len(FEATURES) + len(RAW_FEATURES)}
"""Each variant's columns: the first n of FEATURES + RAW_FEATURES."""
PRIMARY = "ranks_scores"
L2 = 1.0


@dataclass
class Candidates:
    """One query's candidate documents and their feature rows (FEATURES + RAW_FEATURES), with labels."""

    docs: list[str]
    x: np.ndarray
    y: np.ndarray


def _list_features(ranked: Sequence[tuple[str, float]]) -> dict[str, tuple[float, float]]:
    """A document list's (doc, score), best first, as doc -> (1 / rank, min-max scaled score); the first entry of a
    document counts."""
    if not ranked:
        return {}
    scores = [s for _, s in ranked]
    low, span = min(scores), max(scores) - min(scores)
    out: dict[str, tuple[float, float]] = {}
    for doc, score in ranked:
        if doc not in out:
            out[doc] = (1.0 / (len(out) + 1), (score - low) / span if span > 0 else 1.0)
    return out


def query_candidates(run: RetrievalRun, qid: str, chunks_of: Mapping[str, np.ndarray]) -> Candidates:
    """The candidates of `qid` and their features (see the module's docstring)."""
    lists: dict[str, list[tuple[str, float]]] = {
        name: [(run.chunk_doc[i], s) for i, s in getattr(run, name)[qid]] for name in ("lexical", "dense")
    }
    titles = run.titles.get(qid, {})
    for name in ("title", "title_dense"):
        lists[name] = list(titles.get(name, []))
    per_list = {name: _list_features(ranked) for name, ranked in lists.items()}
    docs = sorted(
        set(documents_by_best_chunk(run.lexical[qid], run.chunk_doc))
        | set(documents_by_best_chunk(run.dense[qid], run.chunk_doc))
    )
    title_cosine = dict(lists["title_dense"])
    title_floor = min(title_cosine.values(), default=0.0)
    title_bm25 = dict(lists["title"])
    dense_all, lexical_all = run.dense_scores[qid], run.lexical_scores[qid]
    rows = []
    for doc in docs:
        row = [v for name in LISTS for v in per_list[name].get(doc, (0.0, 0.0))]
        chunks = chunks_of[doc]
        row += [
            float(dense_all[chunks].max()),
            math.log1p(max(float(lexical_all[chunks].max()), 0.0)),
            float(title_cosine.get(doc, title_floor)),
            math.log1p(max(float(title_bm25.get(doc, 0.0)), 0.0)),
        ]
        rows.append(row)
    relevant = run.beir.qrels.get(qid, {})
    labels = np.asarray([int(relevant.get(d, 0) > 0) for d in docs], dtype=np.float64)
    return Candidates(docs, np.asarray(rows, dtype=np.float64), labels)


@dataclass(frozen=True)
class Model:
    coefficients: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    columns: int

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x[:, : self.columns] - self.mean) / self.scale) @ self.coefficients + self.intercept

    def describe(self) -> dict[str, Any]:
        names = (FEATURES + RAW_FEATURES)[: self.columns]
        return {
            "features": list(names),
            "coefficients_standardised": {n: round(float(c), 4) for n, c in zip(names, self.coefficients, strict=True)},
            "intercept": round(self.intercept, 4),
            "mean": [round(float(m), 6) for m in self.mean],
            "scale": [round(float(s), 6) for s in self.scale],
        }


def train(examples: Sequence[Candidates], columns: int) -> Model:
    x = np.vstack([c.x[:, :columns] for c in examples])
    y = np.concatenate([c.y for c in examples])
    coefficients, intercept, mean, scale = fit_logistic(x, y, l2=L2)
    return Model(coefficients, intercept, mean, scale, columns)


class SetData:
    """One set's retrieval, its candidates' features, the grid's per-query table and the fixed baselines."""

    def __init__(self, name: str, run: RetrievalRun, grid: Sequence[Any]) -> None:
        self.name = name
        self.run = run
        self.qids = sorted(run.beir.queries)
        chunks_of: dict[str, list[int]] = {}
        for i, doc in enumerate(run.chunk_doc):
            chunks_of.setdefault(doc, []).append(i)
        index = {d: np.asarray(ix) for d, ix in chunks_of.items()}
        self.candidates = {q: query_candidates(run, q, index) for q in self.qids}
        self.table: FusionTable = fusion_table(run, grid, self.qids)
        self.fixed = {
            "production": dict(zip(self.qids, per_query_ndcg(run, "hybrid", DEFAULT_FUSION, self.qids), strict=True)),
            **{
                r: dict(zip(self.qids, per_query_ndcg(run, r, None, self.qids), strict=True))
                for r in ("lexical", "dense")
            },
        }

    def learned(self, model: Model, ids: Sequence[str]) -> float:
        """Mean nDCG@10 over `ids` of the candidates ranked by `model`."""
        total = 0.0
        for q in ids:
            c = self.candidates[q]
            scores = model.score(c.x)
            ranked = [c.docs[i] for i in sorted(range(len(c.docs)), key=lambda i: (-scores[i], c.docs[i]))]
            total += ndcg_at_k(ranked, self.run.beir.qrels[q])
        return total / len(ids)

    def examples(self, ids: Sequence[str]) -> list[Candidates]:
        return [self.candidates[q] for q in ids]

    def figures(self, train_ids: Sequence[str], test_ids: Sequence[str], models: Mapping[str, Model]) -> dict[str, Any]:
        """On `test_ids`: the grid tuned on `train_ids`, production, lexical, dense and each learned model."""
        chosen = self.table.tune(train_ids)
        out: dict[str, float] = {"hybrid": self.table.mean(chosen, test_ids)}
        for name, scores in self.fixed.items():
            out[name] = sum(scores[q] for q in test_ids) / len(test_ids)
        for name, model in models.items():
            out[name] = self.learned(model, test_ids)
        best = max(("lexical", "dense"), key=lambda r: out[r])
        return {
            "ndcg@10": {n: round(v, 4) for n, v in out.items()},
            "hybrid_fusion": self.table.grid[chosen].describe(),
            "best_single": best,
            "minus_best_single": {n: round(out[n] - out[best], 4) for n in out if n not in ("lexical", "dense")},
        }


def model_names() -> list[str]:
    return [f"learned_{scope}_{variant}" for variant in VARIANTS for scope in ("own", "pooled")]


def fit_all(data: Mapping[str, SetData], halves: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> dict[str, Any]:
    """Every set's own model and the pooled model, each variant, trained on the sets' training halves."""
    models: dict[str, dict[str, Model]] = {name: {} for name in data}
    for variant, columns in VARIANTS.items():
        pooled = train([c for n, d in data.items() for c in d.examples(halves[n][0])], columns)
        for name, d in data.items():
            models[name][f"learned_own_{variant}"] = train(d.examples(halves[name][0]), columns)
            models[name][f"learned_pooled_{variant}"] = pooled
    return models


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    names = list(rows[0]["ndcg@10"])
    out: dict[str, Any] = {
        "splits": len(rows),
        "ndcg@10_b_mean": {n: round(statistics.mean(r["ndcg@10"][n] for r in rows), 4) for n in names},
        "minus_best_single_b": {},
        "learned_minus_hybrid_b": {},
    }
    for n in rows[0]["minus_best_single"]:
        values = [r["minus_best_single"][n] for r in rows]
        out["minus_best_single_b"][n] = {
            "mean": round(statistics.mean(values), 4),
            "min": min(values),
            "max": max(values),
            "splits_at_least_0": sum(v >= 0 for v in values),
        }
    for n in names:
        if n.startswith("learned_"):
            values = [round(r["ndcg@10"][n] - r["ndcg@10"]["hybrid"], 4) for r in rows]
            out["learned_minus_hybrid_b"][n] = {
                "mean": round(statistics.mean(values), 4),
                "min": min(values),
                "max": max(values),
                "splits_at_least_0": sum(v >= 0 for v in values),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--banking", type=Path, default=Path("/tmp/beir/banking"), help="banking BEIR folder")
    parser.add_argument("--cache", type=Path, help="passage-vector cache shared with `eval retrieval --cache`")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="embedder threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "learned_fusion.json")
    args = parser.parse_args()

    started = time.perf_counter()
    embedder = load_embedder("minilm", ROOT / "triton_models", threads=args.threads)
    grid = default_fusion_grid()
    data = {
        name: SetData(name, retrieve(beir, embedder, OPTIONS, cache_dir=args.cache), grid)
        for name, beir in load_sets(args.banking).items()
    }

    fixed_halves = {name: split_queries(d.qids) for name, d in data.items()}
    models = fit_all(data, fixed_halves)
    fixed: dict[str, Any] = {}
    for name, d in data.items():
        dev, held = fixed_halves[name]
        fixed[name] = {
            "queries": {"dev": len(dev), "held_out": len(held)},
            "candidates_per_query": round(statistics.mean(len(c.docs) for c in d.candidates.values()), 1),
            "held_out": d.figures(dev, held, models[name]),
            "dev_in_sample": d.figures(dev, dev, models[name]),
            "models": {n: m.describe() for n, m in models[name].items() if "_own_" in n},
        }
        print(name, "fixed split", json.dumps(fixed[name]["held_out"]), flush=True)
    pooled_models = {n: m.describe() for n, m in models["help_center"].items() if "_pooled_" in n}

    resplits: dict[str, list[dict[str, Any]]] = {name: [] for name in data}
    split_lists = {name: random_halves(d.qids, args.splits) for name, d in data.items()}
    for seed in range(args.splits):
        halves = {name: split_lists[name][seed] for name in data}
        seed_models = fit_all(data, halves)
        for name, d in data.items():
            a, b = halves[name]
            row = {"seed": seed, "queries": {"a": len(a), "b": len(b)}, **d.figures(a, b, seed_models[name])}
            resplits[name].append(row)
            print(name, json.dumps(row), flush=True)

    out = {
        **source_state(),
        "command": "python bench/retrieval_learned_fusion.py " + " ".join(sys.argv[1:]),
        "model": embedder.model_id,
        "configuration": {
            "features": {"ranks_scores": list(FEATURES), "ranks_scores_raw": list(FEATURES + RAW_FEATURES)},
            "primary": PRIMARY,
            "fit": f"fit_logistic (the answerability model's), L2 {L2} on standardised features, rows unweighted",
            "label": "qrels grade > 0",
            "candidates": "the documents of the query's lexical and dense lists (100 chunks each)",
            "ranking": "linear score, ties by document id",
            "grid": f"default_fusion_grid(): {len(grid)} settings, tuned on the same training half",
            "production": DEFAULT_FUSION.describe(),
            "halves": "fixed: split_queries (by hash); resplits: random_halves, seed n, A trains, B scores",
            "best_single": "the better of lexical and dense on the scored half",
        },
        "fixed_split": fixed,
        "pooled_models_fixed_split": pooled_models,
        "resplits": {name: {"summary": summarise(rows), "splits": rows} for name, rows in resplits.items()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, r in out["resplits"].items():
        print(name, "resplits", json.dumps(r["summary"]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
