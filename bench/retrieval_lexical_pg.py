"""PostgreSQL full-text search (ts_rank_cd) against in-memory BM25 (bm25s), on the same chunks of a BEIR set.

    python bench/retrieval_lexical_pg.py BEIR_FOLDER [--out bench/retrieval/lexical_pg_vs_bm25.json]
    python bench/retrieval_lexical_pg.py playbooks/help_center --queries Q --qrels QRELS --out ...

PostgreSQL is the project's embedded one (`connectors.postgres.EmbeddedPostgres`, started in a
temporary folder and stopped at the end). Its side reproduces the knowledge store's lexical
search (connectors/knowledge/pgvector.py and migration 0010): a generated tsvector of the title
(weight A), the heading path (B) and the text (D) in the `english` configuration, the query's words
ORed into `websearch_to_tsquery('english', ...)`, ranked by `ts_rank_cd`. The bm25s side is
`connectors.knowledge.lexical.Bm25Index` over each chunk's `contextual_text` (title, headings,
text), with and without word pairs. Documents score as their best chunk; queries are cleaned of
identifiers first, as the evaluation does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.knowledge.chunking import ChunkingConfig, contextual_text  # noqa: E402
from connectors.knowledge.lexical import Bm25Index  # noqa: E402
from connectors.knowledge.query import clean_query  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.evaluation.retrieval_eval import (  # noqa: E402
    corpus_chunks,
    documents_by_best_chunk,
    evaluate_rankings,
    load_beir,
    split_queries,
)

SCHEMA = """
CREATE FUNCTION join_headings(text[]) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT array_to_string($1, ' ') $$;
CREATE TABLE chunks (
    n integer PRIMARY KEY,
    title text NOT NULL, headings text[] NOT NULL, text text NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, title), 'A')
        || setweight(to_tsvector('english'::regconfig, join_headings(headings)), 'B')
        || setweight(to_tsvector('english'::regconfig, text), 'D')
    ) STORED
);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
"""


def or_query(text: str) -> str:
    """The store's `lexical_query`: the words ORed for websearch_to_tsquery."""
    return " or ".join(re.findall(r"\w[\w'.@-]*", text))


async def pg_rankings(
    dsn: str, chunks: list[Any], queries: dict[str, str], k: int
) -> dict[str, list[tuple[int, float]]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.copy_records_to_table(
            "chunks",
            records=[(n, c.title, c.headings, c.text) for n, c in enumerate(chunks)],
            columns=["n", "title", "headings", "text"],
        )
        await conn.execute("ANALYZE chunks")
        out: dict[str, list[tuple[int, float]]] = {}
        for qid, text in queries.items():
            rows = await conn.fetch(
                """WITH q AS (SELECT websearch_to_tsquery('english', $1) AS query)
                   SELECT n, ts_rank_cd(tsv, q.query) AS rank FROM chunks, q
                   WHERE tsv @@ q.query ORDER BY rank DESC, n LIMIT $2""",
                or_query(text),
                k,
            )
            out[qid] = [(int(r["n"]), float(r["rank"])) for r in rows]
        return out
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("beir", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "retrieval" / "lexical_pg_vs_bm25.json")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--queries", type=Path, help="queries.jsonl (a folder of articles needs it)")
    parser.add_argument("--qrels", type=Path, help="qrels TSV (a folder of articles needs it)")
    args = parser.parse_args()

    from connectors.postgres import EmbeddedPostgres

    beir = load_beir(args.beir, args.queries, args.qrels)
    chunks = corpus_chunks(beir, ChunkingConfig())
    chunk_doc = [c.doc_id for c in chunks]
    queries = {q: clean_query(t) for q, t in beir.queries.items()}
    dev, held = split_queries(beir.queries)
    results: dict[str, Any] = {}

    def score(name: str, ranked: dict[str, list[tuple[int, float]]], seconds: float) -> None:
        docs = {q: documents_by_best_chunk(r, chunk_doc) for q, r in ranked.items()}
        results[name] = {
            "all": evaluate_rankings(docs, beir.qrels),
            "dev": evaluate_rankings({q: docs[q] for q in dev}, beir.qrels),
            "held_out": evaluate_rankings({q: docs[q] for q in held}, beir.qrels),
            "search_ms_per_query": round(1000 * seconds / max(len(queries), 1), 2),
        }

    folder = Path(tempfile.mkdtemp(prefix="retrieval-pg-"))
    server = EmbeddedPostgres(folder / "data", durable=False)
    try:
        dsn = server.start()
        t = time.perf_counter()
        ranked = asyncio.run(pg_rankings(dsn, chunks, queries, args.candidates))
        score("postgres_fts_ts_rank_cd", ranked, time.perf_counter() - t)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    texts = [contextual_text(c) for c in chunks]
    for name, bigrams in (("bm25s", False), ("bm25s_bigrams", True)):
        index = Bm25Index(texts, bigrams=bigrams)
        t = time.perf_counter()
        ranked = {q: index.search(text, args.candidates) for q, text in queries.items()}
        score(name, ranked, time.perf_counter() - t)

    out = {
        **source_state(),
        "command": "python bench/retrieval_lexical_pg.py " + " ".join(sys.argv[1:]),
        "set": beir.name,
        "queries": len(queries),
        "chunks": len(chunks),
        "chunking": "ChunkingConfig() defaults; documents score as their best chunk",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, r in results.items():
        a = r["all"]
        print(f"{name:28s} nDCG@10 {a['ndcg@10']:.4f}  Recall@10 {a['recall@10']:.4f}  MRR@10 {a['mrr@10']:.4f}")


if __name__ == "__main__":
    main()
