-- Human feedback (topic sf.feedback, schemas/outbound.py Feedback): resolutions, intent corrections,
-- reply ratings and customers' CSAT answers, kept whole (comments included) as training data.
--
-- feedback_id is derived from the action that produced the record (a workspace command, a CSAT
-- answer), so a replayed or retried record is one row: ON CONFLICT (feedback_id) DO NOTHING.
-- No foreign key to conversations: feedback carries no customer id to create the conversation
-- with, and the sink may store it before the conversation's messages arrive from their topic.
CREATE TABLE feedback (
    feedback_id      text PRIMARY KEY,
    conversation_id  text NOT NULL,
    message_id       text,
    escalation_id    text,
    kind             text NOT NULL
                     CHECK (kind IN ('resolution', 'intent_correction', 'reply_rating', 'csat')),
    resolution_code  text,
    original_intent  text,
    corrected_intent text,
    rating           smallint CHECK (rating BETWEEN 1 AND 5),
    comment          text NOT NULL DEFAULT '',
    -- the agent id, or 'customer'
    author           text NOT NULL,
    agent_id         text,
    channel          text,
    handle_time_s    double precision CHECK (handle_time_s >= 0),
    first_response_s double precision CHECK (first_response_s >= 0),
    at               timestamptz NOT NULL
);
CREATE INDEX feedback_conversation_idx ON feedback (conversation_id, at);
CREATE INDEX feedback_kind_at_idx ON feedback (kind, at);
-- `supportflow feedback export`: the corrections of a message, joined with its text
CREATE INDEX feedback_corrections_idx ON feedback (message_id, at) WHERE kind = 'intent_correction';
