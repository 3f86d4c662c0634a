"""Fusing the rankings of several retrievers (lexical, dense) into one.

Two methods, both weighted:
- `rrf`: weighted reciprocal rank fusion, sum of w / (k + rank). Only ranks count, so retrievers
  whose scores live on different scales (BM25's open range, cosine's [-1, 1]) mix without tuning
  a scale; `k` flattens the head (small k: the first ranks dominate).
- `minmax`: each retriever's scores scaled to [0, 1] over its own candidate list, then a weighted
  sum; a candidate a retriever did not return counts 0 there. Keeps how much better the first hit
  is than the tenth, which ranks lose.

The weights are not guessed: `supportflow eval retrieval` tunes them on a development split of the
queries and reports them on the held-out rest (README, "Knowledge: retrieval quality"). The
production retriever's setting is stated in `connectors/knowledge/retriever.py` (`DEFAULT_FUSION`,
chosen on the help center and banking together); `FusionConfig()`'s own default here is banking's
tuning without titles (min-max, lexical 0.8), kept for `fuse_passages` callers that pass none. A naive
equal-weight RRF scored below dense retrieval alone on these sets, which is why the weights exist.

Document lists (`DOCUMENT_LISTS`: "title", BM25 over the documents' titles, and "title_dense", the query's
cosine to each title's embedding) rank documents, not chunks: each adds its weight's share to every
candidate chunk of a document it ranks (its rank in RRF, its scaled score in min-max), so a chunk of an
article whose title names what the customer asks about rises with it. They only lift chunks the chunk
retrievers found; a weight of 0 (or no list) is the plain fusion of chunks. Measured in the README
("Knowledge: retrieval quality").

"prior" is a document list that does not depend on the query: documents ranked by how often they were used
(a usage prior, the same list for every query; `supportflow eval retrieval --prior-from dev-qrels` learns it from
the development half's qrels). Its scores are counts, so equal counts share a rank in RRF (the best of theirs)
and min-max scales by the largest count (a count of 1 still lifts; nothing is the list's floor). Not in the
production retriever's `DEFAULT_FUSION`: a tenant turns it on with `knowledge_prior_weight`, after `supportflow
kb prior import` (the retriever reads the counts from the store).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas.knowledge import Passage

__all__ = [
    "DEFAULT_FUSION",
    "DOCUMENT_LISTS",
    "PRIOR_LIST",
    "FusionConfig",
    "fuse",
    "fuse_passages",
    "minmax_fusion",
    "prior_ranking",
    "reciprocal_rank_fusion",
]

Ranked = Sequence[tuple[str, float]]
"""One retriever's answer: (id, score) pairs, best first."""

DOCUMENT_LISTS = ("title", "title_dense", "prior")
"""Lists that rank document ids; they score the chunks of those documents (`fuse`'s `doc_of`)."""

PRIOR_LIST = "prior"
"""The query-independent usage prior among `DOCUMENT_LISTS` (counts: ties share a rank, scaled by the largest)."""


def prior_ranking(uses: Mapping[str, int]) -> list[tuple[str, float]]:
    """The "prior" list from counts of use (doc_id -> uses > 0): most used first, ties by id."""
    return sorted(((doc, float(n)) for doc, n in uses.items() if n > 0), key=lambda kv: (-kv[1], kv[0]))


@dataclass(frozen=True)
class FusionConfig:
    method: str = "minmax"
    weights: Mapping[str, float] = field(default_factory=lambda: {"lexical": 0.8, "dense": 0.2})
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "minmax"):
            raise ValueError(f"unknown fusion method {self.method!r} (rrf or minmax)")
        if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ValueError("fusion weights must be non-negative and not all zero")

    def describe(self) -> dict[str, object]:
        return {"method": self.method, "weights": dict(self.weights), "rrf_k": self.rrf_k}


DEFAULT_FUSION = FusionConfig()


def reciprocal_rank_fusion(
    rankings: Mapping[str, Ranked], weights: Mapping[str, float], k: int = 60
) -> list[tuple[str, float]]:
    """Sum over retrievers of weight / (k + rank), rank from 1; best first, ties by id for determinism."""
    fused: dict[str, float] = {}
    for name, ranked in rankings.items():
        weight = weights.get(name, 0.0)
        if weight <= 0:
            continue
        for rank, (item, _) in enumerate(ranked, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def minmax_fusion(rankings: Mapping[str, Ranked], weights: Mapping[str, float]) -> list[tuple[str, float]]:
    """Weighted sum of each retriever's scores scaled to [0, 1] over its list; best first."""
    fused: dict[str, float] = {}
    for name, ranked in rankings.items():
        weight = weights.get(name, 0.0)
        if weight <= 0 or not ranked:
            continue
        scores = [s for _, s in ranked]
        low, high = min(scores), max(scores)
        span = high - low
        for item, score in ranked:
            # a list of one, or of equal scores: every item is as good as the best
            scaled = (score - low) / span if span > 0 else 1.0
            fused[item] = fused.get(item, 0.0) + weight * scaled
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def fuse(
    rankings: Mapping[str, Ranked], config: FusionConfig = DEFAULT_FUSION, doc_of: Mapping[str, str] | None = None
) -> list[tuple[str, float]]:
    """The chunk lists of `rankings` fused; its `DOCUMENT_LISTS` (document ids) lift the chunks `doc_of` maps
    to their documents."""
    chunks = {name: ranked for name, ranked in rankings.items() if name not in DOCUMENT_LISTS}
    if config.method == "rrf":
        fused = dict(reciprocal_rank_fusion(chunks, config.weights, config.rrf_k))
    else:
        fused = dict(minmax_fusion(chunks, config.weights))
    documents = {n: r for n, r in rankings.items() if n in DOCUMENT_LISTS and r and config.weights.get(n, 0) > 0}
    if documents and doc_of is not None:
        lift: dict[str, float] = {}
        for name, ranked in documents.items():
            for doc, value in _document_lift(name, ranked, config).items():
                lift[doc] = lift.get(doc, 0.0) + value
        fused = {item: score + lift.get(doc_of.get(item, ""), 0.0) for item, score in fused.items()}
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def _document_lift(name: str, ranked: Ranked, config: FusionConfig) -> dict[str, float]:
    """What one document list adds to each of its documents' chunks (see the module's docstring)."""
    weight = config.weights[name]
    if name == PRIOR_LIST:
        if config.method == "rrf":
            # equal counts share the best rank of theirs: 1 + the number of documents with a larger count
            ordered = sorted((float(s) for _, s in ranked), reverse=True)
            rank_of = {s: n for n, s in reversed(list(enumerate(ordered, start=1)))}
            return {doc: weight / (config.rrf_k + rank_of[float(s)]) for doc, s in ranked}
        top = max((float(s) for _, s in ranked), default=0.0)
        return {doc: weight * float(s) / top for doc, s in ranked} if top > 0 else {}
    if config.method == "rrf":
        lift: dict[str, float] = {}
        for rank, (doc, _) in enumerate(ranked, start=1):
            lift[doc] = lift.get(doc, 0.0) + weight / (config.rrf_k + rank)
        return lift
    return dict(minmax_fusion({name: ranked}, {name: weight}))


def fuse_passages(
    results: Mapping[str, Sequence[Passage]],
    config: FusionConfig = DEFAULT_FUSION,
    k: int | None = None,
    documents: Mapping[str, Ranked] | None = None,
) -> list[Passage]:
    """The store's per-retriever passages (`dense_search`, `lexical_search`) as one fused list.

    Each passage keeps every retriever's own score in `scores` (by retriever name) and gets the
    fused one in `score`. `documents`: `DOCUMENT_LISTS` (doc id, score) that lift their documents' passages.
    """
    by_id: dict[str, Passage] = {}
    own: dict[str, dict[str, float]] = {}
    rankings: dict[str, Ranked] = {}
    for name, passages in results.items():
        rankings[name] = [(p.chunk_id, p.score) for p in passages]
        for p in passages:
            by_id.setdefault(p.chunk_id, p)
            own.setdefault(p.chunk_id, {})[name] = p.score
    for name, ranked in (documents or {}).items():
        if name not in DOCUMENT_LISTS:
            raise ValueError(f"{name!r} is not a document list ({', '.join(DOCUMENT_LISTS)})")
        rankings[name] = ranked
    fused = fuse(rankings, config, {item: p.doc_id for item, p in by_id.items()})
    if k is not None:
        fused = fused[:k]
    return [
        by_id[item].model_copy(update={"score": score, "scores": {**by_id[item].scores, **own[item]}})
        for item, score in fused
    ]
