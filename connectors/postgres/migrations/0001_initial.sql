-- supportflow conversation store, first version.
-- Every row is keyed by the id its record carries, so a replayed record changes nothing.
-- Derived values are merged, never counted: first/last timestamps by LEAST/GREATEST,
-- message counts by query. Raw customer text is kept durably only in messages.text.

CREATE TABLE customers (
    customer_id        text PRIMARY KEY,
    display_name       text NOT NULL DEFAULT '',
    preferences        jsonb NOT NULL DEFAULT '{}'::jsonb,
    vip_tier           text NOT NULL DEFAULT 'standard'
                       CHECK (vip_tier IN ('standard', 'silver', 'gold', 'platinum')),
    language           text NOT NULL DEFAULT 'en',
    lifetime           jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- NULL until a CustomerProfile arrives; profiles are last-writer-wins on this
    profile_updated_at timestamptz,
    -- earliest record of this customer seen in any conversation (NULL: profile only)
    first_seen_at      timestamptz
);

-- identity across channels: one address belongs to one customer
CREATE TABLE customer_contacts (
    channel     text NOT NULL,
    address     text NOT NULL,
    customer_id text NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    PRIMARY KEY (channel, address)
);
CREATE INDEX customer_contacts_customer_idx ON customer_contacts (customer_id);

CREATE TABLE conversations (
    conversation_id text PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES customers (customer_id),
    started_at      timestamptz NOT NULL,
    -- latest customer message or reply; NULL while only events were seen
    last_message_at timestamptz
);
CREATE INDEX conversations_customer_idx ON conversations (customer_id, last_message_at DESC);

-- customer messages and replies (agent or human), raw text
CREATE TABLE messages (
    message_id          text PRIMARY KEY,
    conversation_id     text NOT NULL REFERENCES conversations (conversation_id),
    customer_id         text NOT NULL,
    role                text NOT NULL CHECK (role IN ('customer', 'agent', 'human')),
    channel             text NOT NULL,
    -- sender of a customer message, recipient of a reply
    address             text NOT NULL,
    text                text NOT NULL,
    in_reply_to         text,
    content_type        text NOT NULL DEFAULT 'text',
    subject             text,
    provider_message_id text,
    -- received_at of a customer message, created_at of a reply
    at                  timestamptz NOT NULL
);
CREATE INDEX messages_conversation_at_idx ON messages (conversation_id, at, message_id);
CREATE INDEX messages_in_reply_to_idx ON messages (in_reply_to) WHERE in_reply_to IS NOT NULL;

CREATE TABLE sessions (
    session_id       text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (conversation_id),
    customer_id      text NOT NULL,
    -- first and last processed turn; NULL if only the session's close was seen
    started_at       timestamptz,
    last_activity_at timestamptz,
    escalated        boolean NOT NULL DEFAULT false,
    -- set by a session_closed event
    closed_at        timestamptz
);
CREATE INDEX sessions_conversation_idx ON sessions (conversation_id);

-- the customer's text is not copied here: it is the message named by message_id
CREATE TABLE escalations (
    escalation_id       text PRIMARY KEY,
    message_id          text NOT NULL,
    conversation_id     text NOT NULL REFERENCES conversations (conversation_id),
    customer_id         text NOT NULL,
    session_id          text NOT NULL,
    channel             text NOT NULL,
    reason              text NOT NULL,
    detail              text NOT NULL DEFAULT '',
    priority            text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    intent              text,
    confidence          double precision,
    slots               jsonb NOT NULL DEFAULT '{}'::jsonb,
    recommended_actions jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at          timestamptz NOT NULL
);
CREATE INDEX escalations_conversation_idx ON escalations (conversation_id, created_at);

-- one row per event that ran an action
CREATE TABLE actions (
    event_id        text PRIMARY KEY,
    conversation_id text NOT NULL REFERENCES conversations (conversation_id),
    session_id      text NOT NULL,
    customer_id     text NOT NULL,
    type            text NOT NULL,
    name            text NOT NULL,
    status          text NOT NULL,
    result          jsonb NOT NULL DEFAULT '{}'::jsonb,
    at              timestamptz NOT NULL
);
CREATE INDEX actions_conversation_idx ON actions (conversation_id, at);
CREATE INDEX actions_session_idx ON actions (session_id);
