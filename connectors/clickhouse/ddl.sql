-- The analytics tables: `events` (sf.events) and `feedback` (sf.feedback), statements separated by `;`.
--
-- The analytics table of `sf.events`: one row per ConversationEvent (schemas/outbound.py), flattened.
--
-- Runs unchanged on chdb (ClickHouse 26) and on Debian's clickhouse-server 18.16, so it uses only
-- String, Float64, UInt8, UInt32, Array(String) and DateTime('UTC'): no DateTime64, JSON, Map, TTL, CODEC,
-- LowCardinality.
--
-- Dedup rule: ReplacingMergeTree keyed by event_id (ORDER BY event_id, one partition). A retried
-- batch or a replayed turn carries the same event_id (derived from the message id) but may carry a
-- new processing `timestamp`, so the key is the id alone, never the time, and nothing is
-- partitioned by time (ReplacingMergeTree only merges duplicates inside one partition). Duplicates
-- live on until a background merge; every query reads `FROM events FINAL`, which keeps one row
-- per event_id: the one with the latest `inserted_at`.
--
-- Migration rule: a column is only ever added, never renamed, retyped or dropped. CREATE TABLE IF NOT
-- EXISTS leaves an older table as it is, so the store then adds each column of these statements that
-- the table lacks (`ALTER TABLE ... ADD COLUMN ... AFTER`, read off `system.columns`: 18.16 has no
-- ADD COLUMN IF NOT EXISTS); rows written before hold the type's default ('' or 0: no LLM, no knowledge base search).
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
    cost_usd            Float64,         -- language-model spend on the turn (plan and reply), USD
    llm_tier            String,          -- '' without an LLM; 'small', 'large', or 'large+small' (two tiers, one turn)
    llm_model           String,          -- the model that wrote the last LLM part of the turn; '' without an LLM
    llm_tokens_in       UInt32,          -- prompt tokens over the turn's model calls
    llm_tokens_out      UInt32,          -- completion tokens over the turn's model calls
    knowledge_used      UInt8,           -- 1 when the turn searched the knowledge base (`answer`); 0: the rest are blank
    knowledge_confidence Float64,        -- the retriever's calibrated answerability confidence
    knowledge_threshold Float64,         -- the confidence an answer needed
    knowledge_answered  UInt8,           -- 1: a cited answer; 0: a knowledge_gap hand-over, or the template kept
    knowledge_domain    String,          -- the cited article's domain, else the best passage's ('' when none)
    knowledge_cited     Array(String),   -- doc ids the reply quoted (none on a hand-over)
    inserted_at         DateTime('UTC')  -- version: the latest insert of an event_id wins
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY event_id;

-- The analytics table of `sf.feedback`: one row per Feedback (schemas/outbound.py), without free text.
--
-- Comments stay in PostgreSQL (training data); analysts get only whether there was one
-- (has_comment), so no customer-written text reaches ClickHouse. Absent values have sentinels,
-- as the table has no Nullable: '' for strings, rating 0, durations -1 (read them with `>= 0`).
-- Dedup rule as for events: ReplacingMergeTree keyed by feedback_id alone (derived from the action
-- that produced the record), read with FINAL.
CREATE TABLE IF NOT EXISTS feedback
(
    feedback_id      String,
    kind             String,          -- resolution | intent_correction | reply_rating | csat
    at               DateTime('UTC'),
    conversation_id  String,
    message_id       String,
    escalation_id    String,
    resolution_code  String,
    original_intent  String,
    corrected_intent String,
    rating           UInt8,           -- 1 .. 5, or 0 = no rating
    has_comment      UInt8,           -- 1 when the record carried a comment (the text is not kept here)
    author           String,          -- an agent id, or 'customer'
    agent_id         String,
    channel          String,
    handle_time_s    Float64,         -- -1 = not given
    first_response_s Float64,         -- -1 = not given
    inserted_at      DateTime('UTC')  -- version: the latest insert of a feedback_id wins
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY feedback_id
