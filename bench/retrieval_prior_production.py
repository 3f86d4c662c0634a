"""The usage prior through the production path: banking ingested into PostgreSQL, the prior imported as
`supportflow kb prior import` imports it, held-out questions through the workers' `HybridRetriever`.

    python bench/retrieval_prior_production.py BANKING_BEIR_FOLDER [--threads 2]
        [--out bench/retrieval/banking_prior_production.json]

`supportflow eval retrieval --prior-from dev-qrels` measures the prior on in-memory chunks; this checks that
the product's own path gives the same: the corpus written as a JSON Lines help-center export and ingested by
the real ingest (`ExportSource`, the structure-aware chunker, the in-process embedder, pgvector), the
development half's qrels written as a qrels file and read by `read_usage` (what `kb prior import` runs), stored
with `set_usage_prior`, and every question through `HybridRetriever` with `fusion_with_prior(weight)`: the
production fusion (`DEFAULT_FUSION`) plus the prior, as SUPPORTFLOW_KNOWLEDGE_PRIOR_WEIGHT sets it in a worker.
Documents rank by their best passage among the top 100, as in the evaluation. The weight is chosen on the
development half, whose figure is in-sample (its own answers made the prior); only the held-out half is fair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.knowledge.embedding import OnnxEmbedder  # noqa: E402
from connectors.knowledge.pgvector import PgVectorStore  # noqa: E402
from connectors.knowledge.retriever import (  # noqa: E402
    DEFAULT_CANDIDATES,
    DEFAULT_FUSION,
    HybridRetriever,
    fusion_with_prior,
)
from connectors.knowledge.sources.export import ExportSource  # noqa: E402
from connectors.postgres import EmbeddedPostgres  # noqa: E402
from connectors.triton.client import find_version_dir  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import PRIOR_WEIGHTS, BeirSet, evaluate_rankings, load_beir, split_queries  # noqa: E402
from pipelines.knowledge.ingest import default_chunker, ingest  # noqa: E402
from pipelines.knowledge.usage import read_usage  # noqa: E402


def write_export(beir: BeirSet, path: Path) -> None:
    """The corpus as a help-center export (JSON Lines: id, title, body)."""
    with path.open("w", encoding="utf-8") as fh:
        for doc_id, (title, text) in beir.corpus.items():
            if text.strip():
                fh.write(json.dumps({"id": doc_id, "title": title or doc_id, "body": text}) + "\n")


def write_dev_qrels(beir: BeirSet, dev: list[str], path: Path) -> None:
    """The development half's qrels only, in the BEIR layout `kb prior import` reads."""
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{doc}\t{grade}" for q in dev for doc, grade in sorted(beir.qrels.get(q, {}).items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def run(beir: BeirSet, dsn: str, threads: int, work: Path) -> dict[str, Any]:
    version_dir = find_version_dir(ROOT / "triton_models", "text_embedder")
    assert version_dir is not None
    embedder = OnnxEmbedder(version_dir, intra_op_threads=threads)
    store = await PgVectorStore.open(dsn, pool_size=4)
    try:
        export = work / "banking.jsonl"
        write_export(beir, export)
        started = time.perf_counter()
        report = await ingest(ExportSource(export, domain="banking"), "banking", embedder, default_chunker, store)
        ingest_s = time.perf_counter() - started
        dev, held = split_queries(beir.queries)
        qrels_file = work / "dev_qrels.tsv"
        write_dev_qrels(beir, dev, qrels_file)
        uses = read_usage(qrels_file)
        await store.set_usage_prior(uses)

        by_weight: dict[str, Any] = {}
        for weight in PRIOR_WEIGHTS:
            retriever = HybridRetriever(store, embedder, embedder.model_id, fusion=fusion_with_prior(weight))
            rankings: dict[str, list[str]] = {}
            for qid, text in beir.queries.items():
                found = await retriever.retrieve(text, k=DEFAULT_CANDIDATES)
                rankings[qid] = list(dict.fromkeys(p.doc_id for p in found.passages))
            by_weight[str(weight)] = {
                "dev_in_sample": evaluate_rankings({q: rankings[q] for q in dev}, beir.qrels),
                "held_out": evaluate_rankings({q: rankings[q] for q in held}, beir.qrels),
            }
            print(weight, json.dumps(by_weight[str(weight)]), flush=True)
        chosen = max(PRIOR_WEIGHTS, key=lambda w: (by_weight[str(w)]["dev_in_sample"]["ndcg@10"], -w))
        return {
            "documents": len(report.added),
            "chunks_embedded": report.embedded,
            "ingest_s": round(ingest_s, 1),
            "split": {"dev": len(dev), "held_out": len(held)},
            "prior": {"documents": len(uses), "uses": sum(uses.values()), "learned_from": "development qrels"},
            "by_weight": by_weight,
            "chosen_weight": chosen,
            "held_out_ndcg@10": {
                "no_prior": by_weight["0.0"]["held_out"]["ndcg@10"],
                "with_prior": by_weight[str(chosen)]["held_out"]["ndcg@10"],
            },
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("banking", type=Path, help="the banking BEIR folder (bench/tau2_banking_beir.py)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "banking_prior_production.json")
    args = parser.parse_args()
    beir = load_beir(args.banking)
    work = Path(tempfile.mkdtemp(prefix="prior-production-"))
    server = EmbeddedPostgres(work / "data", durable=False)
    started = time.perf_counter()
    try:
        dsn = server.start()
        result = asyncio.run(run(beir, dsn, args.threads, work))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = {
        **source_state(),
        "command": "python bench/retrieval_prior_production.py " + " ".join(sys.argv[1:]),
        "config": {
            "fusion": DEFAULT_FUSION.describe(),
            "prior_weights": list(PRIOR_WEIGHTS),
            "candidates": DEFAULT_CANDIDATES,
            "embedder": "OnnxEmbedder in process, triton_models/text_embedder",
            "threads": args.threads,
        },
        "wall_s": round(time.perf_counter() - started, 1),
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"held-out nDCG@10: {out['held_out_ndcg@10']} (weight {out['chosen_weight']}); written to {args.out}")


if __name__ == "__main__":
    main()
