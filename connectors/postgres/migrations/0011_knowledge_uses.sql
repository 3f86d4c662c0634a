-- Which conversations used which knowledge base article (issue 16: supervisors see, for an article, the
-- conversations whose replies cited it and the hand-overs that carried it as a passage).
--
-- Written by the sink from each turn's ConversationEvent (sf.events, its `knowledge` part): a reply that
-- quoted an article is one `cited` row per article; a knowledge_gap hand-over one `handed_over` row per
-- article among the passages it carried. Keyed by (doc_id, event_id): the event id is derived from the
-- message, so a replayed turn or a retried batch is the same row (ON CONFLICT DO NOTHING). Additive:
-- events stored before this migration simply have no rows here. No foreign key to conversations,
-- as for feedback: rows of one batch may precede the conversation's.
CREATE TABLE knowledge_uses (
    doc_id          text NOT NULL,
    event_id        text NOT NULL,
    use             text NOT NULL CHECK (use IN ('cited', 'handed_over')),
    conversation_id text NOT NULL,
    session_id      text NOT NULL,
    customer_id     text NOT NULL,
    message_id      text NOT NULL,
    channel         text NOT NULL,
    intent          text,
    confidence      double precision NOT NULL,
    at              timestamptz NOT NULL,
    PRIMARY KEY (doc_id, event_id)
);
-- an article's conversations, newest first (the workspace's page of them)
CREATE INDEX knowledge_uses_doc_at_idx ON knowledge_uses (doc_id, at DESC);
