"""The knowledge base in PostgreSQL with pgvector: documents, chunks, vectors, searches, releases.

What a search sees: per domain, the documents of its live release, or of a release named in
the filters; a domain that has never had a release shows its head (each document's latest
version from its source), so a store written only through `upsert` is searchable too.

Every write is idempotent: rows are keyed (a chunk by `chunk_id`, a version by doc and content
hash, a vector by chunk per index) and updated only when they differ, so a replayed document
changes nothing. Versions that no release holds and no head points at are garbage-collected
with their chunks and vectors; released ones stay, so a rollback never re-embeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import numpy as np

from connectors.knowledge import pg_releases
from connectors.knowledge.pg_releases import ReleaseDiff, ReleaseError, ReleaseInfo
from connectors.knowledge.pgvector_codec import encode_vector, register_vector
from connectors.knowledge.protocols import SearchFilters
from connectors.postgres.migrator import migrate as apply_migrations
from connectors.postgres.pools import keep_no_session_state
from schemas.knowledge import Chunk, KnowledgeDocument, Passage

__all__ = [
    "DocumentHead",
    "DocumentView",
    "EmbeddingIndexError",
    "IndexIncompleteError",
    "IndexInfo",
    "IndexesChangedError",
    "KnowledgeStats",
    "MissingVectorsError",
    "PgVectorStore",
    "ReleaseDiff",
    "ReleaseError",
    "ReleaseInfo",
    "WriteResult",
    "vector_table_name",
]

# the source recorded for a version written only as chunks (VectorStore.upsert without a document)
CHUNKS_ONLY_SOURCE = "chunks"


class EmbeddingIndexError(ValueError):
    """An embedding index used with the wrong model or dimension, or not created yet."""


class MissingVectorsError(RuntimeError):
    """A document's chunks would be stored without vectors in the index; retry the document."""


class IndexIncompleteError(EmbeddingIndexError):
    """An index cannot go live: some chunks the store keeps have no vector in it."""

    def __init__(self, index: str, missing: int) -> None:
        super().__init__(f"index {index!r} lacks vectors for {missing} chunk(s); it cannot go live until it has them")
        self.index = index
        self.missing = missing


class IndexesChangedError(RuntimeError):
    """The live index or the indexes being built changed while a document was embedded; embed it again."""


@dataclass(frozen=True)
class IndexInfo:
    name: str
    table_name: str
    model_id: str
    dimension: int
    state: str
    vectors: int = 0
    missing: int = 0  # chunks the store keeps that have no vector here (`indexes()` counts them)

    @property
    def complete(self) -> bool:
        return self.missing == 0


@dataclass(frozen=True)
class DocumentHead:
    doc_id: str
    content_hash: str
    domain: str
    source: str
    deleted: bool


@dataclass(frozen=True)
class WriteResult:
    """What one document write changed: zero everywhere means it was already there."""

    chunks_written: int = 0
    vectors_written: int = 0
    head_changed: bool = False
    chunks_dropped: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.chunks_written or self.vectors_written or self.head_changed or self.chunks_dropped)


@dataclass(frozen=True)
class DocumentView:
    """One version of a document with its chunks, as `kb show` prints it."""

    doc_id: str
    content_hash: str
    title: str
    url: str | None
    section: str | None
    domain: str
    language: str
    updated_at: datetime | None
    source: str
    body: str | None
    deleted: bool
    chunks: list[tuple[int, str, str]] = field(default_factory=list)  # (ordinal, chunk_id, text)
    releases: list[str] = field(default_factory=list)  # the releases that hold this version


@dataclass(frozen=True)
class DomainStats:
    domain: str
    documents: int
    deleted: int
    releases: int
    live_release: str | None


@dataclass(frozen=True)
class KnowledgeStats:
    domains: list[DomainStats]
    versions: int
    chunks: int
    indexes: list[IndexInfo]


def vector_table_name(index: str) -> str:
    """`kb_vectors_<slug>_<hash>`: a safe identifier for any index name, distinct for distinct names."""
    slug = re.sub(r"[^a-z0-9]+", "_", index.lower()).strip("_")[:32] or "index"
    return f"kb_vectors_{slug}_{hashlib.sha256(index.encode()).hexdigest()[:8]}"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def lexical_query(text: str) -> str:
    """A customer's question as a websearch query that ORs its words.

    websearch_to_tsquery ANDs plain words, so "how do I get my money back for a broken kettle"
    would need every word in one chunk; ORed, ts_rank_cd still ranks chunks with more of them (and
    closer together) first. A query that uses the syntax itself (quotes, `or`, `-word`) is kept.
    """
    if '"' in text or re.search(r"(^|\s)(or|OR)(\s|$)", text) or re.search(r"(^|\s)-\w", text):
        return text
    words = re.findall(r"\w[\w'.@-]*", text)
    return " or ".join(words)


# The documents a search may see: a named release; or per domain its live release, or its head
# when it has none. $2 release or NULL, $3 domains (empty: all).
_VISIBLE = """
WITH visible AS (
    SELECT rd.doc_id, rd.content_hash FROM kb_release_documents rd
    WHERE $2::text IS NOT NULL AND rd.release_id = $2
  UNION ALL
    SELECT rd.doc_id, rd.content_hash
    FROM kb_live_releases l JOIN kb_release_documents rd ON rd.release_id = l.release_id
    WHERE $2::text IS NULL AND (cardinality($3::text[]) = 0 OR l.domain = ANY($3::text[]))
  UNION ALL
    SELECT d.doc_id, d.content_hash FROM kb_documents d
    WHERE $2::text IS NULL AND NOT d.deleted AND (cardinality($3::text[]) = 0 OR d.domain = ANY($3::text[]))
      AND NOT EXISTS (SELECT 1 FROM kb_live_releases l WHERE l.domain = d.domain)
), visible_chunks AS (
    SELECT vc.chunk_id FROM kb_version_chunks vc
    JOIN visible v ON v.doc_id = vc.doc_id AND v.content_hash = vc.content_hash
)
"""

# the same with the version of each chunk, and the parameters renumbered: $1 release or NULL, $2 domains
_VISIBLE_CHUNK_ROWS = (
    _VISIBLE.replace("SELECT vc.chunk_id FROM", "SELECT vc.chunk_id, vc.content_hash FROM")
    .replace("$2", "$1")
    .replace("$3", "$2")
)

# $3 domains, $4 language or NULL
_CHUNK_FILTER = """
c.chunk_id IN (SELECT chunk_id FROM visible_chunks)
AND (cardinality($3::text[]) = 0 OR c.domain = ANY($3::text[]))
AND ($4::text IS NULL OR c.language = $4)
"""

_UPSERT_CHUNKS = """
INSERT INTO kb_chunks AS k (chunk_id, doc_id, ordinal, text, headings, title, url, section, domain, language)
SELECT t.chunk_id, t.doc_id, t.ordinal, t.text,
       ARRAY(SELECT jsonb_array_elements_text(t.headings::jsonb)), t.title, t.url, t.section, t.domain, t.language
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::text[])
     AS t(chunk_id, doc_id, ordinal, text, headings, title, url, section, domain, language)
ORDER BY t.chunk_id
ON CONFLICT (chunk_id) DO UPDATE
SET doc_id = excluded.doc_id, ordinal = excluded.ordinal, text = excluded.text, headings = excluded.headings,
    title = excluded.title, url = excluded.url, section = excluded.section, domain = excluded.domain,
    language = excluded.language
WHERE (k.doc_id, k.ordinal, k.text, k.headings, k.title, k.url, k.section, k.domain, k.language)
      IS DISTINCT FROM (excluded.doc_id, excluded.ordinal, excluded.text, excluded.headings, excluded.title,
                        excluded.url, excluded.section, excluded.domain, excluded.language)
"""

_MEMBERSHIP = """
INSERT INTO kb_version_chunks (doc_id, content_hash, chunk_id)
SELECT $1, $2, chunk_id FROM unnest($3::text[]) AS t(chunk_id) ORDER BY chunk_id
ON CONFLICT DO NOTHING
"""

_VERSION = """
INSERT INTO kb_document_versions AS v
    (doc_id, content_hash, domain, title, url, section, language, updated_at, source, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (doc_id, content_hash) DO UPDATE
SET domain = excluded.domain, title = excluded.title, url = excluded.url, section = excluded.section,
    language = excluded.language, updated_at = excluded.updated_at, source = excluded.source,
    body = coalesce(excluded.body, v.body)
WHERE $11 AND (v.domain, v.title, v.url, v.section, v.language, v.updated_at, v.source, v.body)
      IS DISTINCT FROM (excluded.domain, excluded.title, excluded.url, excluded.section, excluded.language,
                        excluded.updated_at, excluded.source, coalesce(excluded.body, v.body))
"""

_HEAD = """
INSERT INTO kb_documents AS d (doc_id, content_hash, domain, source, deleted)
VALUES ($1, $2, $3, $4, false)
ON CONFLICT (doc_id) DO UPDATE
SET content_hash = excluded.content_hash, domain = excluded.domain, source = excluded.source,
    deleted = false, changed_at = now()
WHERE (d.content_hash, d.domain, d.source, d.deleted)
      IS DISTINCT FROM (excluded.content_hash, excluded.domain, excluded.source, false)
"""

_GC_DOCUMENT = """
DELETE FROM kb_document_versions v
WHERE v.doc_id = $1
  AND NOT EXISTS (SELECT 1 FROM kb_release_documents r WHERE r.doc_id = v.doc_id AND r.content_hash = v.content_hash)
  AND NOT EXISTS (SELECT 1 FROM kb_documents d
                  WHERE d.doc_id = v.doc_id AND d.content_hash = v.content_hash AND NOT d.deleted)
"""

_GC_DOCUMENT_CHUNKS = """
DELETE FROM kb_chunks c
WHERE c.doc_id = $1 AND NOT EXISTS (SELECT 1 FROM kb_version_chunks vc WHERE vc.chunk_id = c.chunk_id)
"""


def _rowcount(status: str) -> int:
    return int(status.split()[-1])


class PgVectorStore:
    """`VectorStore` on PostgreSQL + pgvector, plus documents, releases and statistics.

    Open with `await PgVectorStore.open(dsn)` (migrates, then pools connections that know the
    `vector` type). `index` names an embedding index (`ensure_index` creates it with its model
    and dimension); lexical search reads the chunks' text, which every index shares.
    """

    def __init__(self, dsn: str, pool_size: int = 5) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._tables: dict[str, IndexInfo] = {}
        self._on_close: list[Callable[[], object]] = []

    @classmethod
    async def open(cls, dsn: str, pool_size: int = 5, migrate: bool = True) -> PgVectorStore:
        """A store on `dsn`; with `migrate`, pending migrations are applied first (the pool's
        connections need the `vector` type that migration 0010 creates)."""
        if migrate:
            conn = await asyncpg.connect(dsn)
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
        store = cls(dsn, pool_size)
        await store.pool()
        return store

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self.pool_size,
                        init=register_vector,
                        # its settings are SET LOCAL and its locks transaction-scoped: no reset round trip
                        reset=keep_no_session_state,
                        server_settings={"timezone": "UTC", "application_name": "supportflow-kb"},
                    )
        return self._pool

    def close_with(self, callback: Callable[[], object]) -> None:
        """Run `callback()` after the pool closes (e.g. stop the embedded server opened for it)."""
        self._on_close.append(callback)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        while self._on_close:
            await asyncio.to_thread(self._on_close.pop())

    # ---- embedding indexes -------------------------------------------------------------------

    async def ensure_index(self, name: str, model_id: str, dimension: int) -> IndexInfo:
        """The index `name`, created (state building) with its vector table and HNSW index if new.

        An existing index must have the same model and dimension: vectors of two models are not
        comparable, so a new model gets a new index rather than mixing into the old one.
        """
        if not 1 <= len(name) <= 100:
            raise EmbeddingIndexError("an index name has 1 to 100 characters")
        if not 1 <= dimension <= 2000:
            raise EmbeddingIndexError(f"dimension {dimension} is outside 1..2000 (pgvector's HNSW limit for vector)")
        table = vector_table_name(name)
        async with (await self.pool()).acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO kb_indexes (name, table_name, model_id, dimension) VALUES ($1, $2, $3, $4)
                ON CONFLICT (name) DO NOTHING
                """,
                name,
                table,
                model_id,
                dimension,
            )
            row = await conn.fetchrow("SELECT * FROM kb_indexes WHERE name = $1 FOR UPDATE", name)
            assert row is not None
            if (row["model_id"], row["dimension"]) != (model_id, dimension):
                raise EmbeddingIndexError(
                    f"index {name!r} holds {row['model_id']} vectors of dimension {row['dimension']}, "
                    f"not {model_id} ({dimension}); use another index name for another model"
                )
            quoted = _quote(table)
            await conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {quoted} (
                    chunk_id  text PRIMARY KEY REFERENCES kb_chunks ON DELETE CASCADE,
                    embedding vector({int(dimension)}) NOT NULL
                )
                """
            )
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {_quote(table + '_hnsw')} ON {quoted} "
                "USING hnsw (embedding vector_cosine_ops)"
            )
        info = IndexInfo(name, table, model_id, dimension, row["state"])
        self._tables[name] = info
        return info

    async def _index(self, conn: asyncpg.Connection, name: str) -> IndexInfo:
        if name not in self._tables:
            row = await conn.fetchrow("SELECT * FROM kb_indexes WHERE name = $1", name)
            if row is None:
                raise EmbeddingIndexError(f"no embedding index {name!r} (an ingest creates it)")
            self._tables[name] = IndexInfo(name, row["table_name"], row["model_id"], row["dimension"], row["state"])
        return self._tables[name]

    async def indexes(self) -> list[IndexInfo]:
        async with (await self.pool()).acquire() as conn:
            rows = await conn.fetch("SELECT * FROM kb_indexes ORDER BY created_at, name")
            found = []
            chunks = await conn.fetchval("SELECT count(*) FROM kb_chunks")
            for row in rows:
                count = await conn.fetchval(f"SELECT count(*) FROM {_quote(row['table_name'])}")
                found.append(
                    IndexInfo(
                        row["name"],
                        row["table_name"],
                        row["model_id"],
                        row["dimension"],
                        row["state"],
                        count,
                        await self._count_missing(conn, row["table_name"]) if count < chunks else 0,
                    )
                )
            return found

    async def written_indexes(self) -> list[IndexInfo]:
        """The indexes every document write must fill: the live one and those being built (a new model's,
        filled beside the live one until it is switched to), live first."""
        async with (await self.pool()).acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM kb_indexes WHERE state IN ('live', 'building') ORDER BY state = 'live' DESC, name"
            )
        return [IndexInfo(r["name"], r["table_name"], r["model_id"], r["dimension"], r["state"]) for r in rows]

    @staticmethod
    async def _count_missing(conn: asyncpg.Connection, table_name: str) -> int:
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM kb_chunks c "
                f"WHERE NOT EXISTS (SELECT 1 FROM {_quote(table_name)} e WHERE e.chunk_id = c.chunk_id)"
            )
        )

    async def count_missing(self, index: str) -> tuple[int, int]:
        """(chunks without a vector in `index`, chunks the store keeps): every version a release or a
        head holds, so a later rollback of the releases needs no embedding in this index either."""
        async with (await self.pool()).acquire() as conn:
            info = await self._index(conn, index)
            total = int(await conn.fetchval("SELECT count(*) FROM kb_chunks"))
            return await self._count_missing(conn, info.table_name), total

    async def missing_chunks(self, index: str, limit: int) -> list[Chunk]:
        """Up to `limit` of the chunks the store keeps that have no vector in `index`, by chunk_id: what a
        re-embedding embeds next (a rerun after a kill starts where the last committed batch ended)."""
        async with (await self.pool()).acquire() as conn:
            info = await self._index(conn, index)
            rows = await conn.fetch(
                f"""
                SELECT c.*, (SELECT vc.content_hash FROM kb_version_chunks vc WHERE vc.chunk_id = c.chunk_id
                             ORDER BY vc.content_hash LIMIT 1) AS content_hash
                FROM kb_chunks c
                WHERE NOT EXISTS (SELECT 1 FROM {_quote(info.table_name)} e WHERE e.chunk_id = c.chunk_id)
                ORDER BY c.chunk_id
                LIMIT $1
                """,
                limit,
            )
        return [_chunk(row) for row in rows]

    async def write_vectors(self, index: str, vectors: Mapping[str, np.ndarray]) -> int:
        """Store vectors of chunks already in the store (a re-embedding's batch); chunks collected meanwhile
        are skipped. Returns the vectors written."""
        async with (await self.pool()).acquire() as conn, conn.transaction():
            info = await self._index(conn, index)
            for chunk_id, vector in vectors.items():
                if np.shape(vector) != (info.dimension,):
                    raise EmbeddingIndexError(
                        f"chunk {chunk_id}: vector of shape {np.shape(vector)}, index {index!r} has {info.dimension}"
                    )
            # the join skips chunks garbage-collected since they were read (their vector has no row to refer to)
            status = await conn.execute(
                f"""
                INSERT INTO {_quote(info.table_name)} (chunk_id, embedding)
                SELECT t.chunk_id, t.embedding FROM unnest($1::text[], $2::vector[]) AS t(chunk_id, embedding)
                JOIN kb_chunks c ON c.chunk_id = t.chunk_id
                ORDER BY t.chunk_id
                ON CONFLICT (chunk_id) DO NOTHING
                """,
                list(vectors),
                [encode_vector(v) for v in vectors.values()],
            )
        return _rowcount(status)

    async def mark_building(self, name: str) -> IndexInfo:
        """Put a retired index back to `building`, so every document write keeps it complete while it
        catches up; a live or building index is left as it is."""
        async with (await self.pool()).acquire() as conn:
            info = await self._index(conn, name)
            state = await conn.fetchval(
                "UPDATE kb_indexes SET state = CASE WHEN state = 'retired' THEN 'building' ELSE state END, "
                "changed_at = now() WHERE name = $1 RETURNING state",
                name,
            )
        if state is None:
            raise EmbeddingIndexError(f"no embedding index {name!r}")
        return IndexInfo(name, info.table_name, info.model_id, info.dimension, state)

    async def drop_index(self, name: str) -> int:
        """Drop a building or retired index with its vectors; returns how many vectors went. The live
        index is refused: searches read it."""
        async with (await self.pool()).acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM kb_indexes WHERE name = $1 FOR UPDATE", name)
            if row is None:
                raise EmbeddingIndexError(f"no embedding index {name!r}")
            if row["state"] == "live":
                raise EmbeddingIndexError(
                    f"index {name!r} is live: switch to another one first (`supportflow kb switch-index NAME`)"
                )
            vectors = await conn.fetchval(f"SELECT count(*) FROM {_quote(row['table_name'])}")
            await conn.execute(f"DROP TABLE {_quote(row['table_name'])}")
            await conn.execute("DELETE FROM kb_indexes WHERE name = $1", name)
        self._tables.pop(name, None)
        return int(vectors)

    async def live_index(self) -> IndexInfo | None:
        async with (await self.pool()).acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM kb_indexes WHERE state = 'live'")
        if row is None:
            return None
        return IndexInfo(row["name"], row["table_name"], row["model_id"], row["dimension"], row["state"])

    async def set_live_index(self, name: str, *, require_complete: bool = True) -> str | None:
        """Make `name` the live index in one step; the one live before is retired (its vectors stay until
        dropped, so switching back costs no embedding). Returns the index live before.

        With `require_complete`, refuses (IndexIncompleteError) while any chunk the store keeps has no vector
        in `name`, checked in the switch's own transaction: the live index row is locked first, which every
        document write holds shared until it commits (`write_document(require_written=True)`), so no write
        still in flight can add a chunk the check did not see.
        """
        async with (await self.pool()).acquire() as conn, conn.transaction():
            info = await self._index(conn, name)
            rows = await conn.fetch(
                "SELECT name, state FROM kb_indexes WHERE state = 'live' OR name = $1 ORDER BY name FOR UPDATE", name
            )
            if not any(r["name"] == name for r in rows):
                self._tables.pop(name, None)
                raise EmbeddingIndexError(f"no embedding index {name!r}")
            before = next((r["name"] for r in rows if r["state"] == "live"), None)
            if require_complete:
                missing = await self._count_missing(conn, info.table_name)
                if missing:
                    raise IndexIncompleteError(name, missing)
            await conn.execute(
                "UPDATE kb_indexes SET state = 'retired', changed_at = now() WHERE state = 'live' AND name <> $1", name
            )
            await conn.execute(
                "UPDATE kb_indexes SET state = 'live', changed_at = now() WHERE name = $1 AND state <> 'live'", name
            )
        return before

    # ---- documents ---------------------------------------------------------------------------

    async def document_heads(self, source: str | None = None) -> dict[str, DocumentHead]:
        """Every document's head (deleted ones too), or only those last written by `source`."""
        async with (await self.pool()).acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM kb_documents WHERE $1::text IS NULL OR source = $1 ORDER BY doc_id", source
            )
        return {
            row["doc_id"]: DocumentHead(
                row["doc_id"], row["content_hash"], row["domain"], row["source"], row["deleted"]
            )
            for row in rows
        }

    async def document_head(self, doc_id: str) -> DocumentHead | None:
        async with (await self.pool()).acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM kb_documents WHERE doc_id = $1", doc_id)
        if row is None:
            return None
        return DocumentHead(row["doc_id"], row["content_hash"], row["domain"], row["source"], row["deleted"])

    async def missing_vectors(self, index: str, chunk_ids: Sequence[str]) -> set[str]:
        """Which of `chunk_ids` have no vector in `index` yet: only those need embedding."""
        async with (await self.pool()).acquire() as conn:
            info = await self._index(conn, index)
            rows = await conn.fetch(
                f"""
                SELECT t.chunk_id FROM unnest($1::text[]) AS t(chunk_id)
                WHERE NOT EXISTS (SELECT 1 FROM {_quote(info.table_name)} e WHERE e.chunk_id = t.chunk_id)
                """,
                list(chunk_ids),
            )
        return {row["chunk_id"] for row in rows}

    async def version_embedded(self, index: str, doc_id: str, content_hash: str) -> bool:
        """Whether this version has chunks and every one has a vector in `index` (a new index
        must embed documents that did not change)."""
        async with (await self.pool()).acquire() as conn:
            info = await self._index(conn, index)
            row = await conn.fetchrow(
                f"""
                SELECT count(*) AS chunks, count(e.chunk_id) AS embedded
                FROM kb_version_chunks vc LEFT JOIN {_quote(info.table_name)} e ON e.chunk_id = vc.chunk_id
                WHERE vc.doc_id = $1 AND vc.content_hash = $2
                """,
                doc_id,
                content_hash,
            )
        assert row is not None
        return bool(row["chunks"]) and row["chunks"] == row["embedded"]

    async def write_document(
        self,
        index: str,
        document: KnowledgeDocument,
        chunks: Sequence[Chunk],
        vectors: Mapping[str, np.ndarray],
        *,
        also: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        require_written: bool = False,
    ) -> WriteResult:
        """Store one document version whole, in one transaction: its version row, chunks, the
        vectors of chunks new to `index` (`vectors` by chunk_id; the others must be there already),
        and its head. Replaying it changes nothing.

        `also` gives the vectors of more indexes (by name) written in the same transaction, each of
        which must then hold every chunk too. With `require_written`, the live index and every index
        being built must be among those written, or IndexesChangedError is raised (an index was
        created or switched to since the caller embedded: embed again); the rows checked stay locked
        shared until commit, so a switch waits for this write and then sees its chunks.
        """
        for chunk in chunks:
            if (chunk.doc_id, chunk.content_hash) != (document.doc_id, document.content_hash):
                raise ValueError(f"chunk {chunk.chunk_id} belongs to {chunk.doc_id}@{chunk.content_hash[:12]}")
        extra = {name: given for name, given in (also or {}).items() if name != index}
        async with (await self.pool()).acquire() as conn, conn.transaction():
            if require_written:
                required = await conn.fetch(
                    "SELECT name FROM kb_indexes WHERE state IN ('live', 'building') ORDER BY name FOR SHARE"
                )
                unwritten = {r["name"] for r in required} - {index, *extra}
                if unwritten:
                    raise IndexesChangedError(
                        f"{document.doc_id}: index(es) {', '.join(sorted(unwritten))} must be written too"
                    )
            info = await self._index(conn, index)
            await conn.execute(
                _VERSION,
                document.doc_id,
                document.content_hash,
                document.domain,
                document.title,
                document.url,
                document.section,
                document.language,
                document.updated_at,
                document.source,
                document.body,
                True,
            )
            written = await self._write_chunks(conn, info, document.doc_id, document.content_hash, chunks, vectors)
            vectors_written = written[1]
            for name, given in sorted(extra.items()):
                other = await self._index(conn, name)
                vectors_written += await self._write_vectors(conn, other, document.doc_id, chunks, given)
            head = await conn.execute(_HEAD, document.doc_id, document.content_hash, document.domain, document.source)
            dropped = await self._collect_document(conn, document.doc_id)
        return WriteResult(written[0], vectors_written, _rowcount(head) > 0, dropped)

    async def _write_chunks(
        self,
        conn: asyncpg.Connection,
        info: IndexInfo,
        doc_id: str,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: Mapping[str, np.ndarray],
    ) -> tuple[int, int]:
        ordered = sorted(chunks, key=lambda c: c.chunk_id)
        ids = [c.chunk_id for c in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError(f"document {doc_id} has two chunks with one chunk_id")
        status = await conn.execute(
            _UPSERT_CHUNKS,
            ids,
            [c.doc_id for c in ordered],
            [c.ordinal for c in ordered],
            [c.text for c in ordered],
            [json.dumps(c.headings) for c in ordered],
            [c.title for c in ordered],
            [c.url for c in ordered],
            [c.section for c in ordered],
            [c.domain for c in ordered],
            [c.language for c in ordered],
        )
        await conn.execute(_MEMBERSHIP, doc_id, content_hash, ids)
        # a version chunked again differently (a new chunker) keeps only its new chunks
        await conn.execute(
            "DELETE FROM kb_version_chunks WHERE doc_id = $1 AND content_hash = $2 AND chunk_id <> ALL($3::text[])",
            doc_id,
            content_hash,
            ids,
        )
        return _rowcount(status), await self._write_vectors(conn, info, doc_id, ordered, vectors)

    async def _write_vectors(
        self,
        conn: asyncpg.Connection,
        info: IndexInfo,
        doc_id: str,
        chunks: Sequence[Chunk],
        vectors: Mapping[str, np.ndarray],
    ) -> int:
        """The given vectors of `chunks` into `info`'s table; every chunk must then have one there."""
        ids = sorted(c.chunk_id for c in chunks)
        table = _quote(info.table_name)
        given = [(chunk_id, vectors[chunk_id]) for chunk_id in ids if chunk_id in vectors]
        for chunk_id, vector in given:
            if np.shape(vector) != (info.dimension,):
                raise EmbeddingIndexError(
                    f"chunk {chunk_id}: vector of shape {np.shape(vector)}, index {info.name!r} has {info.dimension}"
                )
        vector_status = await conn.execute(
            f"""
            INSERT INTO {table} AS e (chunk_id, embedding)
            SELECT * FROM unnest($1::text[], $2::vector[])
            ON CONFLICT (chunk_id) DO UPDATE SET embedding = excluded.embedding
            WHERE e.embedding IS DISTINCT FROM excluded.embedding
            """,
            [chunk_id for chunk_id, _ in given],
            [encode_vector(vector) for _, vector in given],
        )
        lacking = await conn.fetchval(
            f"""
            SELECT count(*) FROM unnest($1::text[]) AS t(chunk_id)
            WHERE NOT EXISTS (SELECT 1 FROM {table} e WHERE e.chunk_id = t.chunk_id)
            """,
            ids,
        )
        if lacking:
            raise MissingVectorsError(f"{lacking} chunk(s) of {doc_id} have no vector in index {info.name!r}")
        return _rowcount(vector_status)

    async def _collect_document(self, conn: asyncpg.Connection, doc_id: str) -> int:
        """Drop this document's versions that nothing holds any more, and their chunks."""
        await conn.execute(_GC_DOCUMENT, doc_id)
        return _rowcount(await conn.execute(_GC_DOCUMENT_CHUNKS, doc_id))

    # ---- VectorStore -------------------------------------------------------------------------

    async def upsert(self, index: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        """Store chunks with their vectors; each document's chunks become its head version.

        For documents that arrive without their text (the bare protocol); an ingest uses
        `write_document`, which also keeps the body. Returns the chunks given.
        """
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        by_version: dict[tuple[str, str], list[int]] = {}
        for position, chunk in enumerate(chunks):
            by_version.setdefault((chunk.doc_id, chunk.content_hash), []).append(position)
        async with (await self.pool()).acquire() as conn, conn.transaction():
            info = await self._index(conn, index)
            for (doc_id, content_hash), positions in sorted(by_version.items()):
                first = chunks[positions[0]]
                await conn.execute(
                    _VERSION,
                    doc_id,
                    content_hash,
                    first.domain,
                    first.title,
                    first.url,
                    first.section,
                    first.language,
                    None,
                    CHUNKS_ONLY_SOURCE,
                    None,
                    False,  # an existing version (perhaps written whole) is left as it is
                )
                batch = [chunks[p] for p in positions]
                given = {chunks[p].chunk_id: np.asarray(vectors[p], dtype=np.float32) for p in positions}
                await self._write_chunks(conn, info, doc_id, content_hash, batch, given)
                source = await conn.fetchval("SELECT source FROM kb_documents WHERE doc_id = $1", doc_id)
                await conn.execute(_HEAD, doc_id, content_hash, first.domain, source or CHUNKS_ONLY_SOURCE)
                await self._collect_document(conn, doc_id)
        return len(chunks)

    async def delete_document(self, index: str, doc_id: str) -> int:
        """The document's tombstone: it leaves the head (releases that hold it keep it); returns the
        number of its chunks that left the head."""
        async with (await self.pool()).acquire() as conn, conn.transaction():
            head = await conn.fetchrow(
                "UPDATE kb_documents SET deleted = true, changed_at = now() "
                "WHERE doc_id = $1 AND NOT deleted RETURNING content_hash",
                doc_id,
            )
            if head is None:
                return 0
            count = await conn.fetchval(
                "SELECT count(*) FROM kb_version_chunks WHERE doc_id = $1 AND content_hash = $2",
                doc_id,
                head["content_hash"],
            )
            await self._collect_document(conn, doc_id)
        return int(count)

    async def _check_release(self, conn: asyncpg.Connection, filters: SearchFilters) -> None:
        if filters.release is not None:
            await pg_releases.get_release(conn, filters.release)

    async def dense_search(
        self, index: str, vector: np.ndarray, k: int, filters: SearchFilters | None = None
    ) -> list[Passage]:
        """The k chunks nearest `vector` by cosine distance (HNSW), score = cosine similarity."""
        filters = filters or SearchFilters()
        async with (await self.pool()).acquire() as conn, conn.transaction():
            info = await self._index(conn, index)
            if np.shape(vector) != (info.dimension,):
                raise EmbeddingIndexError(
                    f"query vector of shape {np.shape(vector)}, index {index!r} has {info.dimension}"
                )
            await self._check_release(conn, filters)
            # filtered HNSW scans stop early and return too few rows; iterative scans keep going
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            await conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, 2 * int(k))}")
            rows = await conn.fetch(
                _VISIBLE
                + f"""
                SELECT c.chunk_id, c.doc_id, c.title, c.text, c.url, c.section, c.domain,
                       e.embedding <=> $1 AS distance
                FROM {_quote(info.table_name)} e JOIN kb_chunks c ON c.chunk_id = e.chunk_id
                WHERE {_CHUNK_FILTER}
                ORDER BY e.embedding <=> $1
                LIMIT $5
                """,
                encode_vector(vector),
                filters.release,
                list(filters.domains),
                filters.language,
                k,
            )
        # relaxed_order may return slightly out of order: sort here
        ranked = sorted(rows, key=lambda row: (row["distance"], row["chunk_id"]))
        return [_passage(row, "dense", 1.0 - float(row["distance"])) for row in ranked]

    async def lexical_search(
        self, index: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[Passage]:
        """Full-text search (english), ranked by ts_rank_cd; every index shares the chunks' text."""
        filters = filters or SearchFilters()
        text = lexical_query(query)
        if not text.strip():
            return []
        async with (await self.pool()).acquire() as conn:
            await self._check_release(conn, filters)
            rows = await conn.fetch(
                _VISIBLE
                + f""", q AS (SELECT websearch_to_tsquery('english', $1) AS query)
                SELECT c.chunk_id, c.doc_id, c.title, c.text, c.url, c.section, c.domain,
                       ts_rank_cd(c.tsv, q.query) AS rank
                FROM kb_chunks c, q
                WHERE c.tsv @@ q.query AND {_CHUNK_FILTER}
                ORDER BY rank DESC, c.chunk_id
                LIMIT $5
                """,
                text,
                filters.release,
                list(filters.domains),
                filters.language,
                k,
            )
        return [_passage(row, "lexical", float(row["rank"])) for row in rows]

    async def visible_chunks(self, release: str | None = None) -> list[Chunk]:
        """Every chunk a search sees (of all domains): a named release's, or the live releases' (heads
        where a domain has none). For a retriever that indexes them in memory (BM25); a domain or
        language filter is applied on top of these by the caller."""
        async with (await self.pool()).acquire() as conn:
            if release is not None:
                await pg_releases.get_release(conn, release)
            rows = await conn.fetch(
                _VISIBLE_CHUNK_ROWS
                + """
                SELECT c.chunk_id, c.doc_id, c.ordinal, c.text, c.headings, c.title, c.url, c.section, c.domain,
                       c.language, v.content_hash
                FROM kb_chunks c JOIN visible_chunks v ON v.chunk_id = c.chunk_id
                ORDER BY c.chunk_id
                """,
                release,
                [],
            )
        return [_chunk(row) for row in rows]

    async def nearest_vectors(self, index: str, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
        """(chunk_id, cosine similarity) of the `limit` nearest vectors in the index by HNSW alone: no
        release, domain or language filter, so vectors of versions no search sees are among them.

        For a caller that filters by the visible chunks it already holds (the retriever's BM25 index):
        the filtered `dense_search` computes the visible set in SQL on every query, which the planner
        misjudges (two correlated join columns) into an exact scan of every vector, seconds a query at
        100,000 chunks (bench/retriever_scale.py)."""
        async with (await self.pool()).acquire() as conn, conn.transaction():
            info = await self._index(conn, index)
            if np.shape(vector) != (info.dimension,):
                raise EmbeddingIndexError(
                    f"query vector of shape {np.shape(vector)}, index {index!r} has {info.dimension}"
                )
            await conn.execute(f"SET LOCAL hnsw.ef_search = {min(1000, max(40, int(limit)))}")
            rows = await conn.fetch(
                f"SELECT chunk_id, embedding <=> $1 AS distance FROM {_quote(info.table_name)} "
                "ORDER BY embedding <=> $1 LIMIT $2",
                encode_vector(vector),
                limit,
            )
        return [(row["chunk_id"], 1.0 - float(row["distance"])) for row in rows]

    async def search_generation(self) -> str:
        """Changes whenever what a live search sees may have changed: a release made live or rolled back,
        or a head written or deleted (what domains without a release show). Cheap: an in-memory index
        of the visible chunks is rebuilt when this differs from the one it was built at."""
        async with (await self.pool()).acquire() as conn:
            row = await conn.fetchrow(
                """
                SELECT (SELECT coalesce(string_agg(domain || '=' || release_id, ',' ORDER BY domain), '')
                        FROM kb_live_releases) AS live,
                       (SELECT count(*)::text || '/' || coalesce(max(changed_at)::text, '')
                        FROM kb_documents) AS heads,
                       (SELECT count(*)::text || '/' || coalesce(max(imported_at)::text, '')
                        FROM kb_usage_prior) AS prior
                """
            )
        assert row is not None
        return f"{row['live']}|{row['heads']}|{row['prior']}"

    # ---- usage prior ---------------------------------------------------------------------------

    async def usage_prior(self) -> dict[str, int]:
        """How often each article was needed (`kb prior import`): doc_id -> uses; empty when never imported."""
        async with (await self.pool()).acquire() as conn:
            rows = await conn.fetch("SELECT doc_id, uses FROM kb_usage_prior")
        return {row["doc_id"]: row["uses"] for row in rows}

    async def set_usage_prior(self, uses: Mapping[str, int]) -> int:
        """Replace the usage prior with `uses` (doc_id -> a positive count) in one transaction; the rows written.
        Workers see it on their next generation check (`search_generation` covers it)."""
        bad = [doc for doc, n in uses.items() if not doc or isinstance(n, bool) or not 0 < n <= 2**31 - 1]
        if bad:
            raise ValueError(f"a usage prior needs a document id and a count from 1 to 2^31-1: {bad[:3]}")
        async with (await self.pool()).acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM kb_usage_prior")
            await conn.executemany(
                "INSERT INTO kb_usage_prior (doc_id, uses, imported_at) VALUES ($1, $2, clock_timestamp())",
                list(uses.items()),
            )
        return len(uses)

    # ---- releases ----------------------------------------------------------------------------

    async def create_release(
        self, domain: str, *, only_if_changed: bool = True, make_live: bool = True, note: str | None = None
    ) -> tuple[ReleaseInfo | None, bool]:
        """Cut a release from the domain's current documents; see `pg_releases.create_release`."""
        async with (await self.pool()).acquire() as conn:
            return await pg_releases.create_release(
                conn, domain, only_if_changed=only_if_changed, make_live=make_live, note=note
            )

    async def list_releases(self, domain: str | None = None) -> list[ReleaseInfo]:
        async with (await self.pool()).acquire() as conn:
            return await pg_releases.list_releases(conn, domain)

    async def live_release(self, domain: str) -> ReleaseInfo | None:
        async with (await self.pool()).acquire() as conn:
            return await pg_releases.live_release(conn, domain)

    async def diff_releases(self, a: str, b: str) -> ReleaseDiff:
        async with (await self.pool()).acquire() as conn:
            return await pg_releases.diff_releases(conn, a, b)

    async def rollback(self, release_id: str) -> tuple[ReleaseInfo | None, ReleaseInfo]:
        async with (await self.pool()).acquire() as conn:
            return await pg_releases.rollback(conn, release_id)

    async def collect_garbage(self) -> int:
        async with (await self.pool()).acquire() as conn:
            return await pg_releases.collect_garbage(conn)

    # ---- reading -----------------------------------------------------------------------------

    async def get_document(self, doc_id: str, release: str | None = None) -> DocumentView | None:
        """The document's head version, or the version a release holds; None if there is none."""
        async with (await self.pool()).acquire() as conn:
            if release is not None:
                await pg_releases.get_release(conn, release)
                content_hash = await conn.fetchval(
                    "SELECT content_hash FROM kb_release_documents WHERE release_id = $1 AND doc_id = $2",
                    release,
                    doc_id,
                )
                deleted = False
            else:
                head = await conn.fetchrow("SELECT content_hash, deleted FROM kb_documents WHERE doc_id = $1", doc_id)
                content_hash, deleted = (head["content_hash"], head["deleted"]) if head else (None, False)
            if content_hash is None:
                return None
            row = await conn.fetchrow(
                "SELECT * FROM kb_document_versions WHERE doc_id = $1 AND content_hash = $2", doc_id, content_hash
            )
            if row is None:  # a deleted head whose version nothing held any more
                return None
            chunks = await conn.fetch(
                """
                SELECT c.ordinal, c.chunk_id, c.text FROM kb_version_chunks vc JOIN kb_chunks c USING (chunk_id)
                WHERE vc.doc_id = $1 AND vc.content_hash = $2 ORDER BY c.ordinal, c.chunk_id
                """,
                doc_id,
                content_hash,
            )
            releases = await conn.fetch(
                "SELECT release_id FROM kb_release_documents rd JOIN kb_releases r USING (release_id) "
                "WHERE rd.doc_id = $1 AND rd.content_hash = $2 ORDER BY r.domain, r.seq",
                doc_id,
                content_hash,
            )
        return DocumentView(
            doc_id=row["doc_id"],
            content_hash=row["content_hash"],
            title=row["title"],
            url=row["url"],
            section=row["section"],
            domain=row["domain"],
            language=row["language"],
            updated_at=row["updated_at"],
            source=row["source"],
            body=row["body"],
            deleted=deleted,
            chunks=[(c["ordinal"], c["chunk_id"], c["text"]) for c in chunks],
            releases=[r["release_id"] for r in releases],
        )

    async def stats(self) -> KnowledgeStats:
        async with (await self.pool()).acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT d.domain,
                       count(*) FILTER (WHERE NOT d.deleted) AS documents,
                       count(*) FILTER (WHERE d.deleted) AS deleted,
                       (SELECT count(*) FROM kb_releases r WHERE r.domain = d.domain) AS releases,
                       (SELECT release_id FROM kb_live_releases l WHERE l.domain = d.domain) AS live_release
                FROM kb_documents d GROUP BY d.domain ORDER BY d.domain
                """
            )
            versions = await conn.fetchval("SELECT count(*) FROM kb_document_versions")
            chunks = await conn.fetchval("SELECT count(*) FROM kb_chunks")
        return KnowledgeStats(
            domains=[
                DomainStats(r["domain"], r["documents"], r["deleted"], r["releases"], r["live_release"]) for r in rows
            ],
            versions=versions,
            chunks=chunks,
            indexes=await self.indexes(),
        )


def _chunk(row: asyncpg.Record) -> Chunk:
    return Chunk(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        ordinal=row["ordinal"],
        text=row["text"],
        headings=list(row["headings"] or []),
        title=row["title"],
        url=row["url"],
        section=row["section"],
        domain=row["domain"],
        language=row["language"],
        content_hash=row["content_hash"] or "",
    )


def _passage(row: asyncpg.Record, retriever: str, score: float) -> Passage:
    return Passage(
        chunk_id=row["chunk_id"],
        doc_id=row["doc_id"],
        title=row["title"],
        text=row["text"],
        url=row["url"],
        section=row["section"],
        domain=row["domain"],
        score=score,
        scores={retriever: score},
    )
