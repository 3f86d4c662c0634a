"""Retrieval metrics on hand-computed cases, the query split, and the evaluation on a tiny BEIR set."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from connectors.knowledge.chunking import ChunkingConfig
from connectors.knowledge.fusion import FusionConfig
from pipelines.evaluation.retrieval_eval import (
    BeirSet,
    EvalOptions,
    default_fusion_grid,
    documents_by_best_chunk,
    evaluate_rankings,
    fusion_table,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    random_halves,
    recall_at_k,
    resplit_fusion,
    resplit_summary,
    retrieve,
    run_retrieval_eval,
    split_queries,
    tune_fusion,
    usage_prior,
)
from tests.support.knowledge import write_tiny_beir


def test_ndcg_of_a_perfect_ranking_is_one_and_of_no_hit_is_zero():
    assert ndcg_at_k(["a", "b", "x"], {"a": 1, "b": 1}) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a": 1}) == 0.0


def test_ndcg_by_hand_with_graded_gains():
    # relevant: a (2), b (1); ranked: x, a, b -> DCG = 2/log2(3) + 1/log2(4); IDCG = 2/log2(2) + 1/log2(3)
    dcg = 2 / math.log2(3) + 1 / 2
    idcg = 2 + 1 / math.log2(3)
    assert ndcg_at_k(["x", "a", "b"], {"a": 2, "b": 1}) == pytest.approx(dcg / idcg)


def test_ndcg_counts_only_the_first_k_and_the_ideal_is_cut_at_k_too():
    assert ndcg_at_k(["x", "a"], {"a": 1}, k=1) == 0.0
    relevant = {str(i): 1 for i in range(20)}
    assert ndcg_at_k([str(i) for i in range(10)], relevant, k=10) == pytest.approx(1.0)


def test_recall_and_mrr_by_hand():
    assert recall_at_k(["x", "a", "y", "b"], {"a": 1, "b": 1, "c": 1}, k=3) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y", "a"], {"a": 1}) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"] * 10 + ["a"], {"a": 1}) == 0.0


def test_means_over_queries():
    figures = evaluate_rankings({"q1": ["a"], "q2": ["x", "b"]}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert figures["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert figures["recall@10"] == 1.0 and figures["queries"] == 2


def test_a_document_ranks_where_its_best_chunk_does():
    chunk_doc = ["d1", "d1", "d2", "d3"]
    assert documents_by_best_chunk([(2, 0.9), (1, 0.8), (0, 0.7), (3, 0.1)], chunk_doc) == ["d2", "d1", "d3"]


def test_the_split_is_stable_disjoint_and_independent_of_order():
    ids = [f"q{i}" for i in range(200)]
    dev, held = split_queries(ids)
    assert (dev, held) == split_queries(list(reversed(ids)))
    assert not set(dev) & set(held) and len(dev) + len(held) == 200
    assert 70 < len(held) < 130


def test_lexical_evaluation_of_the_tiny_set(tmp_path: Path):
    beir = load_beir(write_tiny_beir(tmp_path / "tiny"))
    assert set(beir.queries) == {"q1", "q2", "q3", "q4"} and beir.qrels["q2"] == {"intl": 2, "shipping": 1}
    result = run_retrieval_eval(beir, None, ["lexical"], EvalOptions(chunking=ChunkingConfig()))
    figures = result["results"]["lexical"]["all"]
    assert figures["queries"] == 4
    assert figures["mrr@10"] >= 0.75  # password, paypal and duties are word matches
    assert result["chunks"] == 6


def test_dense_retrieval_needs_an_embedder(tmp_path: Path):
    beir = load_beir(write_tiny_beir(tmp_path / "tiny"))
    with pytest.raises(ValueError, match="embedder"):
        run_retrieval_eval(beir, None, ["dense"])


def test_a_folder_of_articles_is_a_corpus_keyed_by_path_without_suffix_with_unanswerable_beside_the_queries(
    tmp_path: Path,
):
    articles = tmp_path / "help"
    (articles / "returns").mkdir(parents=True)
    (articles / "returns" / "window.md").write_text(
        "---\ntitle: The return window\n---\nYou have 30 days to send an item back.\n", encoding="utf-8"
    )
    (articles / "README.md").write_text("# How this folder is organised\n", encoding="utf-8")
    evalset = tmp_path / "eval"
    (evalset / "qrels").mkdir(parents=True)
    (evalset / "queries.jsonl").write_text('{"_id": "q1", "text": "how long can I send it back"}\n')
    (evalset / "unanswerable.jsonl").write_text('{"_id": "u1", "text": "do you sell lawn mowers"}\n')
    (evalset / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\treturns/window\t1\n")

    beir = load_beir(articles, evalset / "queries.jsonl", evalset / "qrels" / "test.tsv")

    assert beir.corpus == {"returns/window": ("The return window", "You have 30 days to send an item back.")}
    assert beir.qrels == {"q1": {"returns/window": 1}} and beir.unanswerable == {"u1": "do you sell lawn mowers"}
    with pytest.raises(ValueError, match="needs --queries and --qrels"):
        load_beir(articles)


def test_the_default_grid_tunes_the_title_lists_from_zero_and_can_leave_them_out():
    with_titles = default_fusion_grid()
    assert any(set(c.weights) == {"lexical", "dense"} for c in with_titles)  # the plain fusion stays a choice
    assert any(c.weights.get("title", 0) > 0 and c.weights.get("title_dense", 0) > 0 for c in with_titles)
    assert len({json.dumps(c.describe(), sort_keys=True) for c in with_titles}) == len(with_titles)
    assert all(set(c.weights) <= {"lexical", "dense"} for c in default_fusion_grid(titles=False))


class _WordHashEmbedder:
    """Bags of hashed words, unit length: a deterministic stand-in for a model (no weights to load)."""

    model_id = "test/word-hash"
    dimension = 64

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.sha256(word.encode()).hexdigest()[:6], 16) % self.dimension] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)


TOPICS = ["refund card", "transfer limit", "loan interest", "account closure", "cash back", "branch hours"]


def _prior_set(held_extra: bool) -> BeirSet:
    """40 queries; every query needs the "general" document (a usage prior's favourite) and its topic's. With
    `held_extra` the held-out queries' qrels also list a document no development query needs."""
    corpus = {
        f"doc{n}": (f"About {topic}", f"How {topic} works for customers, {topic} rules.")
        for n, topic in enumerate(TOPICS)
    }
    corpus["general"] = ("General account terms", "Terms that apply to every account and every card.")
    corpus["held_only"] = ("Branch hours", "When branches open.")
    queries = {f"q{n}": f"question about {TOPICS[n % len(TOPICS)]} please" for n in range(40)}
    _, held = split_queries(queries)
    qrels = {q: {"general": 1, f"doc{n % len(TOPICS)}": 1} for n, q in enumerate(queries)}
    if held_extra:
        for q in held:
            qrels[q]["held_only"] = 1
    return BeirSet("prior", corpus, queries, qrels)


def test_the_usage_prior_counts_only_the_queries_it_is_given():
    qrels = {"a": {"x": 1, "y": 1}, "b": {"x": 2, "z": 0}, "c": {"w": 1}}
    assert usage_prior(qrels, ["a", "b"]) == [("x", 2.0), ("y", 1.0)]  # c unread; a grade of 0 is not a use


def test_the_prior_is_learned_from_the_development_half_only_and_held_out_qrels_change_no_choice():
    options = EvalOptions(chunking=ChunkingConfig(), prior_from="dev-qrels", prior_weights=(0.0, 0.5, 2.0))
    plain = run_retrieval_eval(_prior_set(False), _WordHashEmbedder(), ["hybrid"], options)
    extra = run_retrieval_eval(_prior_set(True), _WordHashEmbedder(), ["hybrid"], options)

    dev, _ = split_queries(_prior_set(False).queries)
    assert plain["prior"]["learned_on"] == {"queries": len(dev), "half": "dev"}
    assert plain["prior"]["top"][0] == {"doc": "general", "uses": len(dev)}
    assert "held_only" not in {row["doc"] for row in extra["prior"]["top"]}
    # what the held-out half needs changes neither the prior, nor the tuned fusion, nor a development figure
    assert extra["prior"]["top"] == plain["prior"]["top"] and extra["prior"]["documents"] == 7
    assert extra["fusion"] == plain["fusion"]
    assert extra["results"]["hybrid"]["dev"] == plain["results"]["hybrid"]["dev"]
    assert extra["results"]["hybrid"]["held_out"] != plain["results"]["hybrid"]["held_out"]
    assert [row["prior_weight"] for row in plain["prior"]["by_weight"]] == [0.0, 0.5, 2.0]


def test_a_zero_prior_weight_is_the_evaluation_without_a_prior():
    beir = _prior_set(False)
    without = run_retrieval_eval(beir, _WordHashEmbedder(), ["hybrid"], EvalOptions(chunking=ChunkingConfig()))
    zero = run_retrieval_eval(
        beir,
        _WordHashEmbedder(),
        ["hybrid"],
        EvalOptions(chunking=ChunkingConfig(), prior_from="dev-qrels", prior_weights=(0.0,)),
    )
    assert zero["fusion"] == without["fusion"] and "prior" not in zero["fusion"]["weights"]
    assert zero["results"] == without["results"] and zero["fusion_grid"] == without["fusion_grid"]
    with pytest.raises(ValueError, match="prior source"):
        run_retrieval_eval(beir, None, ["lexical"], EvalOptions(prior_from="all-qrels"))


def test_random_halves_are_seeded_disjoint_halves_whatever_the_order_of_the_ids():
    ids = [f"q{i}" for i in range(41)]
    halves = random_halves(reversed(ids), 3)
    assert halves == random_halves(ids, 3) and len(halves) == 3
    for a, b in halves:
        assert len(a) == 20 and len(b) == 21 and sorted(a + b) == sorted(ids) and a == sorted(a) and b == sorted(b)
    assert halves[0] != halves[1]
    shuffled = sorted(ids)
    random.Random(2).shuffle(shuffled)  # what bench/retrieval_prior_resplits.py did before the function existed
    assert halves[2] == (sorted(shuffled[:20]), sorted(shuffled[20:]))


def _hybrid_run():
    beir = _prior_set(False)
    return retrieve(beir, _WordHashEmbedder(), EvalOptions(chunking=ChunkingConfig()))


def test_the_fusion_table_chooses_and_scores_as_tune_fusion_and_the_evaluation_do():
    run = _hybrid_run()
    grid = default_fusion_grid()[::7]
    table = fusion_table(run, grid)
    assert table.ndcg.shape == (len(grid), 40)
    for a, b in random_halves(run.beir.queries, 4):
        config, _ = tune_fusion(run, a, grid)
        chosen = table.tune(a)
        assert grid[chosen] == config
        expected = evaluate_rankings(run.doc_rankings("hybrid", config, b), run.beir.qrels)["ndcg@10"]
        assert table.mean(chosen, b) == pytest.approx(expected, abs=1e-12)


def test_a_resplit_tunes_on_half_a_and_compares_the_hybrid_with_the_better_single_retriever_on_half_b():
    run = _hybrid_run()
    grid = default_fusion_grid()[::7]
    table = fusion_table(run, grid)
    halves = random_halves(run.beir.queries, 3)
    production = FusionConfig("rrf", {"lexical": 0.5, "dense": 0.5}, rrf_k=5)
    rows = resplit_fusion(run, table, halves, {"production": production})
    for seed, (row, (a, b)) in enumerate(zip(rows, halves, strict=True)):
        on_b = row["ndcg@10_b"]
        assert row["seed"] == seed and row["queries"] == {"a": len(a), "b": len(b)}
        assert set(on_b) == {"hybrid", "production", "lexical", "dense"}
        assert row["fusion"] == grid[table.tune(a)].describe()
        assert on_b[row["best_single_b"]] == max(on_b["lexical"], on_b["dense"])
        assert row["hybrid_minus_best_single_b"] == pytest.approx(on_b["hybrid"] - on_b[row["best_single_b"]], abs=2e-4)
        dense_b = evaluate_rankings(run.doc_rankings("dense", qids=b), run.beir.qrels)["ndcg@10"]
        assert on_b["dense"] == round(dense_b, 4)
    summary = resplit_summary(rows, {"hybrid_minus_best_single_b": "hybrid_minus_best_single_b"})
    margins = [r["hybrid_minus_best_single_b"] for r in rows]
    assert summary["splits"] == 3 and summary["hybrid_minus_best_single_b"]["min"] == min(margins)
    assert summary["hybrid_minus_best_single_b"]["splits_at_least_0"] == sum(m >= 0 for m in margins)
