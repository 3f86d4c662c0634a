"""Query-adaptive fusion: the lexical/dense split chosen per query from what the retriever sees at query time.

    python bench/retrieval_adaptive_fusion.py [--banking /tmp/beir/banking] [--cache DIR] [--threads 1]
        [--out bench/retrieval/adaptive_fusion.json]

One fixed fusion serves the help center (customers paraphrase: dense wins) and banking (situations that
name products: lexical wins) poorly: no setting of `bench/retrieval_fusion_both_sets.py`'s grid is at
least the best single retriever on both sets' held-out halves. Here the production fusion's shape is kept
(weighted RRF, k 5, "title" at half the lexical weight, "title_dense" at a quarter of the dense weight, so a
lexical share of 0.5 *is* `DEFAULT_FUSION`) and only the lexical share w (dense 1 - w) moves, per query,
with one query-time signal:

- `dense_top`: the best chunk's cosine; `dense_margin`: its margin over the fifth;
- `bm25_top`: log(1 + the best chunk's BM25 score);
- `coverage`: the share of the query's analysed words (no pairs) that occur in the chunks' vocabulary;
- `agreement`: the share of the dense list's first 10 documents that are in the lexical list's first 10;
- `terms`: log(1 + the number of analysed query words).

Rule families, every setting scored on the development halves only (`split_queries`, as everywhere):
- `fixed`: w constant (the grid's 0.05 steps);
- `threshold`: w = w_low below a threshold of one signal, w_high at or above it (thresholds: the deciles
  of the signal over both sets' development queries pooled);
- `logistic`: w = sigmoid(a + b z), z the signal standardised over the pooled development queries.
- `nested` (stage 2, only when stage 1 chose a threshold rule): one branch of that rule split again by a
  threshold rule on any signal; it replaces stage 1's choice only with a higher objective.
Per-query nDCG@10 is computed once for each w on a 0.05 grid, so a rule is scored by looking up its w
(a logistic's w rounded to the grid; the chosen rule is re-scored with its exact weights too).

Selection (fixed before any run): among the settings whose development nDCG@10 is at least the development
best single retriever's on each set and at least the production fusion's on banking, the highest mean over
the two sets of development nDCG@10 divided by the development best single's; ties go to the simpler
family (fixed, threshold, logistic, nested), then the earlier setting. Held-out and all-query figures are
reported, never used. (Stage 2 was added after stage 1's held-out figures had been seen, the help center's
being the production fusion's; its selection rule is stage 1's.) The per-query oracle (the best w for each
query, chosen knowing its qrels) is reported as a ceiling; `fixed_curve` and `best_refining_other_branch`
are diagnostics, not choices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.knowledge.chunking import contextual_text  # noqa: E402
from connectors.knowledge.fusion import FusionConfig  # noqa: E402
from connectors.knowledge.lexical import analyse  # noqa: E402
from connectors.knowledge.query import clean_query  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import (  # noqa: E402
    EvalOptions,
    RetrievalRun,
    documents_by_best_chunk,
    load_beir,
    load_embedder,
    ndcg_at_k,
    retrieve,
    split_queries,
)

EVAL_SET = ROOT / "pipelines" / "evaluation" / "data" / "help_center_eval"
SIGNALS = ("dense_top", "dense_margin", "bm25_top", "coverage", "agreement", "terms")
W_GRID = tuple(round(0.05 * i, 2) for i in range(21))
"""The lexical shares scored per query (0: dense and title_dense only; 1: lexical and title only)."""
RULE_W = tuple(round(0.1 * i, 1) for i in range(11))
"""The shares a threshold rule may pick on either side."""
LOGISTIC_A = tuple(round(-3 + 0.5 * i, 1) for i in range(13))
LOGISTIC_B = tuple(round(-4 + 0.5 * i, 1) for i in range(17) if i != 8)
PRODUCTION_W = 0.5
TITLE_SHARE, TITLE_DENSE_SHARE = 0.5, 0.25
"""`DEFAULT_FUSION`'s document lists as shares of the chunk list they mirror (0.25 / 0.5, 0.125 / 0.5)."""
RRF_K = 5


def fusion_at(w: float) -> FusionConfig:
    """The production fusion's shape with lexical share `w`."""
    weights = {
        "lexical": w,
        "dense": 1 - w,
        "title": TITLE_SHARE * w,
        "title_dense": TITLE_DENSE_SHARE * (1 - w),
    }
    return FusionConfig("rrf", {n: v for n, v in weights.items() if v > 0}, rrf_k=RRF_K)


def query_signals(run: RetrievalRun, vocabulary: set[str], qid: str, text: str) -> dict[str, float]:
    """The query-time signals of one query (see the module's docstring)."""
    dense = run.dense[qid]
    lexical = run.lexical[qid]
    words = analyse(text)
    dense_docs = documents_by_best_chunk(dense, run.chunk_doc)[:10]
    lexical_docs = set(documents_by_best_chunk(lexical, run.chunk_doc)[:10])
    return {
        "dense_top": dense[0][1] if dense else 0.0,
        "dense_margin": dense[0][1] - dense[min(4, len(dense) - 1)][1] if dense else 0.0,
        "bm25_top": math.log1p(lexical[0][1]) if lexical else 0.0,
        "coverage": sum(w in vocabulary for w in words) / len(words) if words else 0.0,
        "agreement": len([d for d in dense_docs if d in lexical_docs]) / max(len(dense_docs), 1),
        "terms": math.log1p(len(words)),
    }


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def snap(w: float) -> float:
    return round(round(w / 0.05) * 0.05, 2)


class SetData:
    """One set's per-query signals and per-query nDCG@10 at every lexical share of `W_GRID`."""

    def __init__(self, name: str, run: RetrievalRun) -> None:
        self.name = name
        self.run = run
        beir = run.beir
        self.dev, self.held = split_queries(beir.queries)
        self.qids = sorted(beir.queries)
        vocabulary = {t for c in run.chunks for t in analyse(contextual_text(c))}
        self.signals = {q: query_signals(run, vocabulary, q, clean_query(beir.queries[q])) for q in self.qids}
        self.single = {
            r: {q: ndcg_at_k(run.doc_rankings(r, qids=[q])[q], beir.qrels[q]) for q in self.qids}
            for r in ("lexical", "dense")
        }
        self.by_w: dict[float, dict[str, float]] = {}
        for w in W_GRID:
            rankings = run.doc_rankings("hybrid", fusion_at(w))
            self.by_w[w] = {q: ndcg_at_k(rankings[q], beir.qrels[q]) for q in self.qids}

    def subset(self, part: str) -> list[str]:
        return {"all": self.qids, "dev": self.dev, "held_out": self.held}[part]

    def mean(self, per_query: Mapping[str, float], part: str) -> float:
        ids = self.subset(part)
        return sum(per_query[q] for q in ids) / len(ids)

    def score_rule(self, rule: Callable[[dict[str, float]], float], part: str) -> float:
        """Mean nDCG@10 over `part` with each query's share `rule(signals)` snapped to the grid."""
        ids = self.subset(part)
        return sum(self.by_w[snap(rule(self.signals[q]))][q] for q in ids) / len(ids)

    def score_exact(self, rule: Callable[[dict[str, float]], float]) -> dict[str, float]:
        """all / dev / held-out nDCG@10 with each query fused at its exact share (no snapping)."""
        per_query = {}
        for q in self.qids:
            ranked = self.run.ranked_chunks(q, "hybrid", fusion_at(rule(self.signals[q])))
            per_query[q] = ndcg_at_k(documents_by_best_chunk(ranked, self.run.chunk_doc), self.run.beir.qrels[q])
        return {part: round(self.mean(per_query, part), 4) for part in ("all", "dev", "held_out")}

    def parts(self, per_query: Mapping[str, float]) -> dict[str, float]:
        return {part: round(self.mean(per_query, part), 4) for part in ("all", "dev", "held_out")}


Rule = tuple[str, dict[str, Any], Callable[[dict[str, float]], float]]
"""(family, its parameters, the rule: a query's signals -> its lexical share)."""


def thresholds_of(values: Sequence[float]) -> list[float]:
    """The deciles of `values` (distinct), the thresholds a rule may cut at."""
    return sorted({round(float(np.quantile(np.asarray(values), p / 10)), 4) for p in range(1, 10)})


def refine(stage1: Mapping[str, Any], pooled: Mapping[str, Sequence[float]]) -> list[Rule]:
    """Stage 2: stage 1's threshold rule with one of its branches split again by a threshold on any signal."""
    first, cut = stage1["signal"], stage1["threshold"]
    rules: list[Rule] = []
    for branch in ("below", "at_or_above"):
        kept = stage1["w_at_or_above"] if branch == "below" else stage1["w_below"]
        for signal in SIGNALS:
            for t, low, high in itertools.product(thresholds_of(pooled[signal]), RULE_W, RULE_W):
                if low == high:
                    continue
                params = {
                    "first": {"signal": first, "threshold": cut, "refined_branch": branch, "other_branch_w": kept},
                    "signal": signal,
                    "threshold": t,
                    "w_below": low,
                    "w_at_or_above": high,
                }

                def rule(s: dict[str, float], sig=signal, t=t, lo=low, hi=high, branch=branch, kept=kept) -> float:
                    inner = hi if s[sig] >= t else lo
                    if (s[first] >= cut) == (branch == "at_or_above"):
                        return inner
                    return kept

                rules.append(("nested", params, rule))
    return rules


def enumerate_rules(pooled: Mapping[str, Sequence[float]]) -> list[Rule]:
    """Stage 1: every setting of the fixed, threshold and logistic families."""
    rules: list[Rule] = []
    for w in W_GRID:
        rules.append(("fixed", {"w": w}, lambda s, w=w: w))
    for signal in SIGNALS:
        values = np.asarray(pooled[signal])
        for t, low, high in itertools.product(thresholds_of(values), RULE_W, RULE_W):
            if low == high:
                continue  # a fixed share
            params = {"signal": signal, "threshold": t, "w_below": low, "w_at_or_above": high}
            rules.append(("threshold", params, lambda s, sig=signal, t=t, lo=low, hi=high: hi if s[sig] >= t else lo))
        mean, std = float(values.mean()), float(values.std()) or 1.0
        for a, b in itertools.product(LOGISTIC_A, LOGISTIC_B):
            params = {"signal": signal, "a": a, "b": b, "mean": round(mean, 6), "std": round(std, 6)}
            rules.append(
                ("logistic", params, lambda s, sig=signal, a=a, b=b, m=mean, sd=std: sigmoid(a + b * (s[sig] - m) / sd))
            )
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--banking", type=Path, default=Path("/tmp/beir/banking"), help="banking BEIR folder")
    parser.add_argument("--cache", type=Path, help="passage-vector cache shared with `eval retrieval --cache`")
    parser.add_argument("--threads", type=int, default=1, help="embedder threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "adaptive_fusion.json")
    args = parser.parse_args()

    started = time.perf_counter()
    sets = {
        "help_center": load_beir(
            ROOT / "playbooks" / "help_center", EVAL_SET / "queries.jsonl", EVAL_SET / "qrels" / "test.tsv"
        ),
        "banking": load_beir(args.banking),
    }
    embedder = load_embedder("minilm", ROOT / "triton_models", threads=args.threads)
    data = {
        name: SetData(name, retrieve(beir, embedder, EvalOptions(bigrams=True), cache_dir=args.cache))
        for name, beir in sets.items()
    }
    pooled = {s: [d.signals[q][s] for d in data.values() for q in d.dev] for s in SIGNALS}

    best_single_dev = {
        n: max(d.mean(d.single["lexical"], "dev"), d.mean(d.single["dense"], "dev")) for n, d in data.items()
    }
    production_dev = {n: d.mean(d.by_w[PRODUCTION_W], "dev") for n, d in data.items()}
    order = {"fixed": 0, "threshold": 1, "logistic": 2, "nested": 3}
    scored: list[dict[str, Any]] = []

    def select(rules: Sequence[Rule], offset: int) -> int | None:
        """Score `rules` on the development halves (appended to `scored`); the index in `rules` of the best."""
        best: tuple[tuple[float, int, int], int] | None = None
        for n, (family, params, rule) in enumerate(rules):
            dev = {name: d.score_rule(rule, "dev") for name, d in data.items()}
            eligible = all(dev[s] >= best_single_dev[s] - 1e-12 for s in data) and (
                dev["banking"] >= production_dev["banking"] - 1e-12
            )
            objective = sum(dev[s] / best_single_dev[s] for s in data) / len(data)
            scored.append(
                {
                    "family": family,
                    **params,
                    "dev": {s: round(v, 4) for s, v in dev.items()},
                    "objective": round(objective, 5),
                    "eligible": eligible,
                }
            )
            if eligible:
                key = (round(objective, 9), -order[family], -(offset + n))
                if best is None or key > best[0]:
                    best = (key, n)
        return None if best is None else best[1]

    rules = enumerate_rules(pooled)
    stage1 = select(rules, 0)
    stage2: list[Rule] = []
    if stage1 is not None and rules[stage1][0] == "threshold":
        stage2 = refine(rules[stage1][1], pooled)
    chosen2 = select(stage2, len(rules)) if stage2 else None
    every = rules + stage2
    best_index = stage1
    if chosen2 is not None and (
        stage1 is None or scored[len(rules) + chosen2]["objective"] > scored[stage1]["objective"]
    ):
        best_index = len(rules) + chosen2

    def report(rule: Callable[[dict[str, float]], float]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, d in data.items():
            per_query = {q: d.by_w[snap(rule(d.signals[q]))][q] for q in d.qids}
            shares = [rule(d.signals[q]) for q in d.qids]
            out[name] = {
                **d.parts(per_query),
                "exact_weights": d.score_exact(rule),
                "mean_lexical_share": round(float(np.mean(shares)), 3),
            }
        return out

    result: dict[str, Any] = {
        **source_state(),
        "command": "python bench/retrieval_adaptive_fusion.py " + " ".join(sys.argv[1:]),
        "model": embedder.model_id,
        "fusion_shape": {
            "method": "rrf",
            "rrf_k": RRF_K,
            "lexical": "w",
            "dense": "1 - w",
            "title": f"{TITLE_SHARE} w",
            "title_dense": f"{TITLE_DENSE_SHARE} (1 - w)",
            "production_w": PRODUCTION_W,
        },
        "signals": list(SIGNALS),
        "settings_tried": {f: sum(1 for r in every if r[0] == f) for f in order} | {"total": len(every)},
        "selection": (
            "max mean over both sets of dev nDCG@10 / dev best single, among the settings with dev nDCG@10 >= dev"
            " best single on each set and >= the production fusion's dev on banking; ties: fixed, threshold,"
            " logistic, nested, then the earlier; stage 2 (nested) refines one branch of stage 1's threshold rule"
            " with a second threshold rule and replaces it only with a higher objective"
        ),
        "eligible_settings": sum(1 for s in scored if s["eligible"]),
        "baselines": {},
        "signal_means": {
            name: {
                part: {s: round(float(np.mean([d.signals[q][s] for q in d.subset(part)])), 4) for s in SIGNALS}
                for part in ("dev", "held_out")
            }
            for name, d in data.items()
        },
    }
    for name, d in data.items():
        oracle = {q: max(d.by_w[w][q] for w in W_GRID) for q in d.qids}
        result["baselines"][name] = {
            "lexical": d.parts(d.single["lexical"]),
            "dense": d.parts(d.single["dense"]),
            "production": d.parts(d.by_w[PRODUCTION_W]),
            "oracle_per_query_w": d.parts(oracle),
        }
    if stage1 is not None:
        family, params, rule = rules[stage1]
        result["stage1_chosen"] = {
            "family": family,
            **params,
            "dev_objective": scored[stage1]["objective"],
            **report(rule),
        }
    if best_index is not None:
        family, params, rule = every[best_index]
        result["chosen"] = {
            "family": family,
            **params,
            "dev_objective": scored[best_index]["objective"],
            **report(rule),
        }
        held_ok = (
            all(
                result["chosen"][n]["held_out"]
                >= max(result["baselines"][n][r]["held_out"] for r in ("lexical", "dense"))
                for n in data
            )
            and result["chosen"]["banking"]["held_out"] >= result["baselines"]["banking"]["production"]["held_out"]
        )
        result["chosen"]["meets_success_rule_held_out"] = held_ok
    else:
        result["chosen"] = None
    top = sorted((s for s in scored if s["eligible"]), key=lambda s: -s["objective"])[:20]
    result["top_eligible_by_dev"] = top
    result["best_by_family_dev"] = {
        f: max((s for s in scored if s["family"] == f and s["eligible"]), key=lambda s: s["objective"], default=None)
        for f in order
    }
    # diagnostics, reported and never used to choose: each set's fixed-share curve, and the best rule of stage 2
    # that refines the other branch than the chosen one (on these sets: the branch the help center falls in)
    result["fixed_curve"] = {name: {str(w): d.parts(d.by_w[w]) for w in RULE_W} for name, d in data.items()}
    if best_index is not None and every[best_index][0] == "nested":
        other = next(
            (
                i
                for i in sorted(range(len(rules), len(every)), key=lambda i: (-scored[i]["objective"], i))
                if scored[i]["eligible"]
                and every[i][1]["first"]["refined_branch"] != every[best_index][1]["first"]["refined_branch"]
            ),
            None,
        )
        if other is not None:
            family, params, rule = every[other]
            result["best_refining_other_branch"] = {
                "family": family,
                **params,
                "dev_objective": scored[other]["objective"],
                **report(rule),
            }
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("baselines", "settings_tried", "eligible_settings", "stage1_chosen", "chosen")
    print(json.dumps({k: result.get(k) for k in keys}, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
