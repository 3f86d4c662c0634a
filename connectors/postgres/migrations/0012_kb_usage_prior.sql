-- The knowledge base's usage prior (issue 16): how often each article was needed, as the tenant counted it
-- (tickets linked to articles in their help desk, or a retrieval benchmark's development qrels), imported by
-- `supportflow kb prior import`. The retriever fuses it as a query-independent document list when
-- SUPPORTFLOW_KNOWLEDGE_PRIOR_WEIGHT is above 0 (off by default: it helps a tenant whose questions concentrate
-- on a few articles and hurts one with a long tail; README, "A usage prior"). Replaced whole on each import.
-- Keyed by doc_id without a foreign key: an article may be counted before it is ingested, or after it is
-- deleted; the retriever reads only the documents a search sees.
CREATE TABLE kb_usage_prior (
    doc_id      text PRIMARY KEY,
    uses        integer NOT NULL CHECK (uses > 0),
    imported_at timestamptz NOT NULL DEFAULT now()
);
