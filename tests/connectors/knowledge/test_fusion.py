"""Weighted fusion of rankings: what the weights do, and that a hybrid can always fall back to one retriever."""

from __future__ import annotations

import pytest

from connectors.knowledge.fusion import FusionConfig, fuse, fuse_passages, minmax_fusion, reciprocal_rank_fusion
from schemas.knowledge import Passage

LEXICAL = [("a", 12.0), ("b", 9.0), ("c", 1.0)]
DENSE = [("c", 0.91), ("d", 0.90), ("a", 0.40)]


def test_rrf_sums_weight_over_k_plus_rank():
    fused = dict(reciprocal_rank_fusion({"lexical": LEXICAL, "dense": DENSE}, {"lexical": 1.0, "dense": 1.0}, k=10))
    assert fused["a"] == pytest.approx(1 / 11 + 1 / 13)
    assert fused["c"] == pytest.approx(1 / 13 + 1 / 11)
    assert fused["d"] == pytest.approx(1 / 12)


def test_the_heavier_retriever_decides_the_top():
    both = {"lexical": LEXICAL, "dense": DENSE}
    assert reciprocal_rank_fusion(both, {"lexical": 0.8, "dense": 0.2})[0][0] == "a"
    assert reciprocal_rank_fusion(both, {"lexical": 0.2, "dense": 0.8})[0][0] == "c"


@pytest.mark.parametrize("method", ["rrf", "minmax"])
def test_a_zero_weight_leaves_exactly_the_other_retrievers_ranking(method):
    """Why the tuned hybrid can never score below its best single retriever on the data it was tuned on:
    the grid holds each retriever alone, and fusing with one weight at zero reproduces it."""
    both = {"lexical": LEXICAL, "dense": DENSE}
    only_dense = fuse(both, FusionConfig(method, {"lexical": 0.0, "dense": 1.0}))
    only_lexical = fuse(both, FusionConfig(method, {"lexical": 1.0, "dense": 0.0}))
    assert [i for i, _ in only_dense] == [i for i, _ in DENSE]
    assert [i for i, _ in only_lexical] == [i for i, _ in LEXICAL]


def test_minmax_scales_each_retriever_to_unit_range_before_weighing():
    fused = dict(minmax_fusion({"lexical": LEXICAL, "dense": DENSE}, {"lexical": 0.5, "dense": 0.5}))
    assert fused["a"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert fused["c"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert fused["d"] == pytest.approx(0.5 * (0.90 - 0.40) / (0.91 - 0.40))
    assert fused["b"] == pytest.approx(0.5 * (9.0 - 1.0) / 11.0)


def test_fusion_is_deterministic_on_ties():
    tied = {"lexical": [("y", 1.0)], "dense": [("x", 1.0)]}
    assert [i for i, _ in reciprocal_rank_fusion(tied, {"lexical": 1.0, "dense": 1.0})] == ["x", "y"]


def test_bad_weights_are_refused():
    with pytest.raises(ValueError):
        FusionConfig("rrf", {"lexical": 0.0, "dense": 0.0})
    with pytest.raises(ValueError):
        FusionConfig("borda", {"dense": 1.0})


def _passage(chunk_id: str, score: float) -> Passage:
    return Passage(chunk_id=chunk_id, doc_id=chunk_id.split("#")[0], title="t", text="x", score=score)


def test_fused_passages_keep_each_retrievers_score_and_carry_the_fused_one():
    dense = [_passage("d1#0", 0.8), _passage("d2#0", 0.7)]
    lexical = [_passage("d2#0", 7.5), _passage("d3#0", 3.0)]
    config = FusionConfig("rrf", {"dense": 0.5, "lexical": 0.5})
    fused = fuse_passages({"dense": dense, "lexical": lexical}, config)
    assert fused[0].chunk_id == "d2#0"
    assert fused[0].scores == {"dense": 0.7, "lexical": 7.5}
    assert fused[0].score == pytest.approx(0.5 / 62 + 0.5 / 61)
    assert [p.chunk_id for p in fuse_passages({"dense": dense, "lexical": lexical}, config, k=2)] == [
        p.chunk_id for p in fused[:2]
    ]


@pytest.mark.parametrize("method", ["rrf", "minmax"])
def test_a_title_list_lifts_every_candidate_chunk_of_the_documents_it_ranks_and_adds_no_chunk(method):
    doc_of = {"a": "doc1", "b": "doc2", "c": "doc3", "d": "doc2"}
    chunks = {"lexical": LEXICAL, "dense": DENSE}
    plain = fuse(chunks, FusionConfig(method, {"lexical": 0.5, "dense": 0.5}))
    weights = {"lexical": 0.5, "dense": 0.5, "title": 0.5}
    titled = dict(fuse({**chunks, "title": [("doc2", 3.0), ("doc9", 1.0)]}, FusionConfig(method, weights, 5), doc_of))

    assert set(titled) == {i for i, _ in plain}  # doc9 has no candidate chunk: nothing is added
    assert [i for i, _ in fuse(chunks, FusionConfig(method, weights, 5), doc_of)] == [i for i, _ in plain]
    lifted = {i: titled[i] - s for i, s in fuse(chunks, FusionConfig(method, weights, 5))}
    assert lifted["b"] == pytest.approx(lifted["d"]) and lifted["b"] > 0  # both chunks of doc2, by the same
    assert lifted["a"] == pytest.approx(0.0) and lifted["c"] == pytest.approx(0.0)


def test_fused_passages_rise_with_their_documents_title():
    def passage(chunk_id: str, doc_id: str, score: float) -> Passage:
        return Passage(chunk_id=chunk_id, doc_id=doc_id, title=doc_id, text="t", score=score)

    lexical = [passage("x#0", "x", 9.0), passage("y#0", "y", 8.0)]
    config = FusionConfig("rrf", {"lexical": 1.0, "title": 1.0}, rrf_k=5)

    assert [p.doc_id for p in fuse_passages({"lexical": lexical}, config)] == ["x", "y"]
    titled = fuse_passages({"lexical": lexical}, config, documents={"title": [("y", 2.0)]})
    assert [p.doc_id for p in titled] == ["y", "x"]
    with pytest.raises(ValueError, match="not a document list"):
        fuse_passages({"lexical": lexical}, config, documents={"dense": [("y", 2.0)]})


def test_the_usage_prior_lifts_its_documents_chunks_and_equal_counts_share_a_rank():
    doc_of = {"a": "doc1", "b": "doc2", "c": "doc3", "d": "doc2"}
    chunks = {"lexical": LEXICAL, "dense": DENSE}
    prior = [("doc2", 3.0), ("doc1", 1.0), ("doc3", 1.0), ("doc9", 1.0)]
    plain = dict(fuse(chunks, FusionConfig("rrf", {"lexical": 0.5, "dense": 0.5}, 5)))
    weights = {"lexical": 0.5, "dense": 0.5, "prior": 0.4}
    fused = dict(fuse({**chunks, "prior": prior}, FusionConfig("rrf", weights, 5), doc_of))
    assert set(fused) == set(plain)  # doc9 has no candidate chunk: nothing is added
    assert fused["b"] - plain["b"] == pytest.approx(0.4 / 6) and fused["d"] - plain["d"] == pytest.approx(0.4 / 6)
    assert fused["a"] - plain["a"] == pytest.approx(0.4 / 7) == pytest.approx(fused["c"] - plain["c"])  # a tie
    minmax = dict(fuse({**chunks, "prior": prior}, FusionConfig("minmax", weights), doc_of))
    plain_minmax = dict(fuse(chunks, FusionConfig("minmax", {"lexical": 0.5, "dense": 0.5})))
    assert minmax["a"] - plain_minmax["a"] == pytest.approx(0.4 * 1 / 3)  # a count of 1 still lifts


@pytest.mark.parametrize("method", ["rrf", "minmax"])
def test_a_zero_prior_weight_changes_nothing(method):
    doc_of = {"a": "doc1", "b": "doc2", "c": "doc3", "d": "doc2"}
    rankings = {"lexical": LEXICAL, "dense": DENSE, "title": [("doc3", 2.0)]}
    weights = {"lexical": 0.5, "dense": 0.5, "title": 0.25}
    without = fuse(rankings, FusionConfig(method, weights, 5), doc_of)
    zero = fuse({**rankings, "prior": [("doc2", 5.0)]}, FusionConfig(method, {**weights, "prior": 0.0}, 5), doc_of)
    assert zero == without
