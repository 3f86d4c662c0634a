"""The production retriever end to end on PostgreSQL: quality through the store, ingest time, and latency at scale.

    python bench/retriever_scale.py [--banking /tmp/beir/banking] [--chunks 100000] [--ingest-docs 300]
        [--out bench/retrieval/retriever_scale.json]

Runs on the project's embedded PostgreSQL (pgvector), started in a temporary folder and stopped at the end:

1. quality: `playbooks/help_center` ingested with the real ingest (FolderSource, the structure-aware
   chunker, the in-process OnnxEmbedder), then every help-center question through `HybridRetriever`
   (k 100, so documents rank by their best passage as in `supportflow eval retrieval`): nDCG@10 and the
   answer/hand-over verdict at the default threshold against `unanswerable.jsonl`, on the held-out half.
   This checks the store path (HNSW, the store's filters, BM25 over `visible_chunks`) against the
   evaluation's in-memory figures.
2. ingest time: `--ingest-docs` synthetic documents (help-center and banking articles, each perturbed:
   some words dropped, a sentence of its own added) through the real `ingest`, embedding included;
   the rate is measured here and 10,000 documents are extrapolated from it (said so in the JSON).
3. latency at scale: more perturbed copies written until the store holds `--chunks` chunks. Their
   vectors are NOT each embedded (at the ~20 chunks/s this machine embeds, 100,000 would take 80+
   minutes): each copy's chunk gets the real vector of the original document's chunk at the same
   place plus Gaussian noise (cosine to it about 0.9), renormalised, so the HNSW graph holds 100,000
   distinct vectors clustered as real ones are. Then a release per domain, one lexical index build
   (timed: a release change costs this), and every help-center and banking question through the
   retriever: p50/p99 of the whole call and of each stage (query embedding, dense, lexical, the title lists).
   The build includes embedding the documents' distinct titles when the fusion weighs "title_dense".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.knowledge.chunking import contextual_text  # noqa: E402
from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, OnnxEmbedder  # noqa: E402
from connectors.knowledge.pgvector import PgVectorStore  # noqa: E402
from connectors.knowledge.retriever import DEFAULT_CANDIDATES, DEFAULT_FUSION, HybridRetriever  # noqa: E402
from connectors.knowledge.sources.base import SourceItem, content_hash  # noqa: E402
from connectors.knowledge.sources.folder import FolderSource  # noqa: E402
from connectors.triton.client import find_version_dir  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import BeirSet, evaluate_rankings, load_beir, split_queries  # noqa: E402
from pipelines.knowledge.ingest import default_chunker, ingest  # noqa: E402
from schemas.knowledge import Chunk, KnowledgeDocument  # noqa: E402

HELP_CENTER = ROOT / "playbooks" / "help_center"
EVAL_SET = ROOT / "pipelines" / "evaluation" / "data" / "help_center_eval"
REGIONS = (
    "Austria", "Belgium", "Canada", "Denmark", "Estonia", "Finland", "France", "Germany", "Greece", "Ireland", "Italy",
    "Latvia", "Norway", "Poland", "Portugal", "Spain", "Sweden", "Texas", "Ontario", "Bavaria", "Scotland", "Wales",
    "Quebec", "Oregon", "Nevada", "Utah", "Ohio",
)  # fmt: skip


class ListSource:
    """A fixed list of documents as an ingest source."""

    def __init__(self, name: str, documents: list[KnowledgeDocument]) -> None:
        self._name = name
        self._documents = documents

    @property
    def name(self) -> str:
        return self._name

    @property
    def complete(self) -> bool:
        return True

    def estimate(self) -> int | None:
        return len(self._documents)

    async def documents(self) -> AsyncIterator[SourceItem]:
        for document in self._documents:
            yield document


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2) if values else 0.0


def base_documents(banking: Path | None) -> list[KnowledgeDocument]:
    async def read() -> list[KnowledgeDocument]:
        return [d async for d in FolderSource(HELP_CENTER, domain="support").documents()]  # type: ignore[misc]

    documents = [d for d in asyncio.run(read()) if isinstance(d, KnowledgeDocument)]
    if banking is not None:
        beir = load_beir(banking)
        for doc_id, (title, text) in beir.corpus.items():
            if text.strip():
                documents.append(
                    KnowledgeDocument(
                        doc_id=f"banking/{doc_id}",
                        title=title[:1000] or doc_id,
                        body=text,
                        domain="banking",
                        source="bench:banking",
                        content_hash=content_hash(title, text, None, None),
                    )
                )
    return documents


def perturbed(base: KnowledgeDocument, copy: int, rng: random.Random, source: str) -> KnowledgeDocument:
    """A variant of `base`: about 8% of its longer words dropped, and a sentence of its own at the end."""
    lines = []
    for line in base.body.split("\n"):
        if line.lstrip().startswith(("#", "|")):
            lines.append(line)  # headings and table rows keep their structure
            continue
        lines.append(" ".join(w for w in line.split(" ") if not (len(w) > 3 and w.isalpha() and rng.random() < 0.08)))
    region = rng.choice(REGIONS)
    body = "\n".join(lines) + f"\n\nThis version applies to customers in {region} (edition {copy})."
    title = f"{base.title} ({region})"
    return KnowledgeDocument(
        doc_id=f"synthetic/{copy:05d}/{base.doc_id}",
        title=title,
        body=body,
        domain=base.domain,
        language=base.language,
        source=source,
        content_hash=content_hash(title, body, None, None),
    )


async def quality(store: PgVectorStore, embedder: OnnxEmbedder, beir: BeirSet) -> dict[str, Any]:
    t = time.perf_counter()
    report = await ingest(FolderSource(HELP_CENTER, domain="support"), "support", embedder, default_chunker, store)
    ingest_s = time.perf_counter() - t
    retriever = HybridRetriever(store, embedder, embedder.model_id)
    rankings: dict[str, list[str]] = {}
    verdicts: dict[str, tuple[bool, bool]] = {}  # qid -> (answered, should answer)
    for qid, text in {**beir.queries, **beir.unanswerable}.items():
        found = await retriever.retrieve(text, k=DEFAULT_CANDIDATES)
        docs = list(dict.fromkeys(p.doc_id.removesuffix(".md") for p in found.passages))
        should = qid in beir.qrels and bool(set(docs[:3]) & set(beir.qrels[qid]))
        if qid in beir.qrels:
            rankings[qid] = docs
        verdicts[qid] = (found.answerable, should)
    _, held = split_queries(beir.queries)
    _, held_negatives = split_queries(beir.unanswerable)
    held_ids = set(held) | set(held_negatives)

    def classification(ids: set[str]) -> dict[str, Any]:
        pairs = [verdicts[q] for q in ids]
        tp = sum(a and s for a, s in pairs)
        fp = sum(a and not s for a, s in pairs)
        fn = sum(s and not a for a, s in pairs)
        return {
            "questions": len(pairs),
            "should_answer": sum(s for _, s in pairs),
            "precision_of_answering": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall_of_answering": round(tp / (tp + fn), 4) if tp + fn else None,
            "unanswerable_handed_over": f"{sum(not verdicts[q][0] for q in ids if q in beir.unanswerable)}"
            f"/{sum(q in beir.unanswerable for q in ids)}",
        }

    return {
        "documents": len(report.added),
        "chunks_embedded": report.embedded,
        "ingest_s": round(ingest_s, 1),
        "hybrid": {
            "all": evaluate_rankings(rankings, beir.qrels),
            "held_out": evaluate_rankings({q: rankings[q] for q in held}, beir.qrels),
        },
        "answer_verdict": {"held_out": classification(held_ids), "all": classification(set(verdicts))},
    }


async def timed_ingest(
    store: PgVectorStore, embedder: OnnxEmbedder, documents: list[KnowledgeDocument]
) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    t = time.perf_counter()
    report = await ingest(ListSource("bench:ingest", documents), None, embedder, default_chunker, store)
    seconds = time.perf_counter() - t
    per_doc = seconds / max(len(documents), 1)
    return {
        "documents": len(documents),
        "chunks_embedded": report.embedded,
        "seconds": round(seconds, 1),
        "documents_per_s": round(len(documents) / seconds, 2),
        "chunks_per_s": round(report.embedded / seconds, 2),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        **(
            {}
            if len(documents) >= 10_000
            else {
                "ten_thousand_documents_s_extrapolated": round(per_doc * 10_000),
                "extrapolated": "from this run's rate, linearly; not a measured 10,000-document ingest",
            }
        ),
    }


async def fill(
    store: PgVectorStore,
    embedder: OnnxEmbedder,
    bases: list[KnowledgeDocument],
    target_chunks: int,
    rng: random.Random,
    first_copy: int,
) -> dict[str, Any]:
    """Perturbed copies with derived vectors (see the module's docstring) until the store holds `target_chunks`."""
    index = embedder.model_id
    t = time.perf_counter()
    base_chunks = {d.doc_id: default_chunker(d) for d in bases}
    flat = [c for d in bases for c in base_chunks[d.doc_id]]
    vectors = embedder.embed_passages([contextual_text(c) for c in flat])
    base_vectors: dict[str, np.ndarray] = {}
    position = 0
    for d in bases:
        count = len(base_chunks[d.doc_id])
        base_vectors[d.doc_id] = vectors[position : position + count]
        position += count
    embed_s = time.perf_counter() - t

    have = (await store.stats()).chunks
    np_rng = np.random.default_rng(7)
    written = 0
    t = time.perf_counter()
    semaphore = asyncio.Semaphore(4)

    async def write(document: KnowledgeDocument, chunks: list[Chunk], own: dict[str, np.ndarray]) -> None:
        async with semaphore:
            await store.write_document(index, document, chunks, own)

    copy = first_copy
    while have + written < target_chunks:
        tasks = []
        for base in bases:
            if have + written >= target_chunks:
                break
            document = perturbed(base, copy, rng, "bench:scale")
            chunks = default_chunker(document)
            originals = base_vectors[base.doc_id]
            noise = np_rng.normal(0.0, 0.022, size=(len(chunks), originals.shape[1])).astype(np.float32)
            derived = originals[np.minimum(np.arange(len(chunks)), len(originals) - 1)] + noise
            derived /= np.linalg.norm(derived, axis=1, keepdims=True)
            tasks.append(write(document, chunks, {c.chunk_id: derived[i] for i, c in enumerate(chunks)}))
            written += len(chunks)
        await asyncio.gather(*tasks)
        copy += 1
        print(f"  {have + written} chunks written ({time.perf_counter() - t:.0f} s)", flush=True)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    for domain in sorted({d.domain for d in bases}):
        await store.create_release(domain, note="bench")
    release_s = time.perf_counter() - t
    return {
        "base_chunks_embedded": len(flat),
        "base_embed_s": round(embed_s, 1),
        "chunks_written": written,
        "write_s": round(write_s, 1),
        "chunks_written_per_s": round(written / write_s, 1),
        "release_s": round(release_s, 1),
    }


async def latency(store: PgVectorStore, embedder: OnnxEmbedder, queries: list[str]) -> dict[str, Any]:
    retriever = HybridRetriever(store, embedder, embedder.model_id)
    t = time.perf_counter()
    lexical = await retriever.lexical_index()
    build_s = time.perf_counter() - t
    for text in queries[:5]:  # warm-up: first HNSW pages into the cache, onnxruntime's first runs
        await retriever.retrieve(text)
    totals: list[float] = []
    stages: dict[str, list[float]] = {"embed": [], "dense": [], "lexical": [], "titles": []}
    answered = 0
    for text in queries:
        t = time.perf_counter()
        found = await retriever.retrieve(text)
        totals.append((time.perf_counter() - t) * 1000)
        answered += found.answerable
        for stage, values in stages.items():
            values.append(found.timings_ms[stage])
    assert retriever.builds == 1, "the lexical index was rebuilt while nothing changed"
    return {
        "visible_chunks": len(lexical.chunks),
        "titles": len(lexical.titles),
        "lexical_index_build_s": round(build_s, 1),
        "queries": len(queries),
        "total_ms": {
            "p50": percentile(totals, 50),
            "p99": percentile(totals, 99),
            "mean": round(float(np.mean(totals)), 2),
        },
        "stages_ms": {s: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for s, v in stages.items()},
        "answered": answered,
    }


async def main_async(
    args: argparse.Namespace, dsn: str, help_center: BeirSet, bases: list[KnowledgeDocument], queries: list[str]
) -> dict[str, Any]:
    version_dir = find_version_dir(ROOT / "triton_models", EMBEDDER_MODEL_NAME)
    assert version_dir is not None
    embedder = OnnxEmbedder(version_dir, intra_op_threads=args.threads)
    store = await PgVectorStore.open(dsn, pool_size=5)
    rng = random.Random(11)
    result: dict[str, Any] = {}
    try:
        print("quality through the store ...", flush=True)
        result["quality_help_center"] = await quality(store, embedder, help_center)
        print(json.dumps(result["quality_help_center"]), flush=True)
        if args.ingest_docs:
            print(f"ingest of {args.ingest_docs} documents ...", flush=True)
            # each base article in turn, a new edition of it on every pass: N distinct documents
            sample = [
                perturbed(bases[i % len(bases)], i // len(bases), rng, "bench:ingest") for i in range(args.ingest_docs)
            ]
            result["ingest"] = await timed_ingest(store, embedder, sample)
            print(json.dumps(result["ingest"]), flush=True)
        if args.chunks:
            print(f"filling to {args.chunks} chunks ...", flush=True)
            result["fill"] = await fill(store, embedder, bases, args.chunks, rng, first_copy=1)
            print(json.dumps(result["fill"]), flush=True)
            result["latency"] = await latency(store, embedder, queries)
            result["latency"]["store_chunks"] = (await store.stats()).chunks
            print(json.dumps(result["latency"]), flush=True)
    finally:
        await store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--banking", type=Path, help="the banking BEIR folder (bench/tau2_banking_beir.py)")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the store for the latency run; 0: skip")
    parser.add_argument("--ingest-docs", type=int, default=300, help="documents of the timed ingest; 0: skip")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "retriever_scale.json")
    args = parser.parse_args()

    from connectors.postgres import EmbeddedPostgres

    # read before the event loop runs (the folder source is read with asyncio.run)
    help_center = load_beir(HELP_CENTER, EVAL_SET / "queries.jsonl", EVAL_SET / "qrels" / "test.tsv")
    bases = base_documents(args.banking)
    queries = list(help_center.queries.values())
    if args.banking is not None:
        queries += list(load_beir(args.banking).queries.values())
    folder = Path(tempfile.mkdtemp(prefix="retriever-scale-"))
    server = EmbeddedPostgres(folder / "data", durable=False)
    started = time.perf_counter()
    try:
        dsn = server.start()
        result = asyncio.run(main_async(args, dsn, help_center, bases, queries))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    out = {
        **source_state(),
        "command": "python bench/retriever_scale.py " + " ".join(sys.argv[1:]),
        "config": {
            "fusion": DEFAULT_FUSION.describe(),
            "candidates": DEFAULT_CANDIDATES,
            "embedder": "OnnxEmbedder in process, triton_models/text_embedder",
            "threads": args.threads,
            "vectors_at_scale": "perturbed copies carry their original chunk's real vector plus noise (sigma 0.022 "
            "per dimension, renormalised); only the originals and the timed ingest were embedded",
        },
        "wall_s": round(time.perf_counter() - started, 1),
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
