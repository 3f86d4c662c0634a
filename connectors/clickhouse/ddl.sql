-- The analytics table of `sf.events`: one row per ConversationEvent (schemas/outbound.py), flattened.
--
-- Runs unchanged on chdb (ClickHouse 26) and on Debian's clickhouse-server 18.16, so it uses only
-- String, Float64, Array(String) and DateTime('UTC'): no DateTime64, JSON, Map, TTL, CODEC,
-- LowCardinality.
--
-- Dedup rule: ReplacingMergeTree keyed by event_id (ORDER BY event_id, one partition). A retried
-- batch or a replayed turn carries the same event_id (derived from the message id) but may carry a
-- new processing `timestamp`, so the key is the id alone, never the time, and nothing is
-- partitioned by time (ReplacingMergeTree only merges duplicates inside one partition). Duplicates
-- live on until a background merge; every query reads `FROM events FINAL`, which keeps one row
-- per event_id: the one with the latest `inserted_at`.
CREATE TABLE IF NOT EXISTS events
(
    event_id            String,
    event_type          String,          -- turn_processed | escalated | session_closed
    timestamp           DateTime('UTC'), -- when the turn was processed (seconds)
    conversation_id     String,
    session_id          String,
    customer_id         String,
    channel             String,
    message_id          String,          -- '' when the event has no message (session_closed)
    message_content     String,          -- already PII-redacted on sf.events
    message_type        String,
    intent              String,
    intent_confidence   Float64,
    entity_types        Array(String),   -- types only; entity values are not kept for analysts
    sentiment_label     String,          -- positive | neutral | negative
    sentiment_score     Float64,         -- -1 .. 1
    action_type         String,          -- tool | escalation | ''
    action_name         String,          -- the tool, or the escalation reason
    action_status       String,
    response_content    String,
    response_confidence Float64,
    latency_ms          Float64,         -- message received -> reply (or hand-over)
    model_used          String,
    cost_usd            Float64,
    inserted_at         DateTime('UTC')  -- version: the latest insert of an event_id wins
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY event_id
