-- Voice calls and delivery statuses (connectors/channels/twilio.py, routes.py).
--
-- messages.channel_meta keeps what a channel adds to a message (Message.channel_meta): a call
-- turn's call_sid, recording_url and transcription confidence. The transcript is messages.text.
ALTER TABLE messages ADD COLUMN channel_meta jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX messages_call_sid_idx ON messages ((channel_meta ->> 'call_sid')) WHERE channel_meta ? 'call_sid';

-- One row per message we sent through a provider (Twilio's MessageSid), holding the furthest
-- status its callbacks reported: `rank` only grows (a late `sent` never replaces `delivered`),
-- outcomes share a rank so the first stays, and an error code, once known, is kept.
-- channel_deliveries.provider_message_id lists the sids of a reply's parts.
CREATE TABLE delivery_statuses (
    message_sid text PRIMARY KEY,
    provider    text NOT NULL,
    status      text NOT NULL,
    rank        smallint NOT NULL,
    error_code  integer,
    recipient   text,
    -- when the first and the stored status reached the ingress
    first_at    timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- A call's recordings, announced by the recording-status callback; tied to the conversation by
-- call_sid (messages.channel_meta ->> 'call_sid').
CREATE TABLE call_recordings (
    recording_sid text PRIMARY KEY,
    call_sid      text NOT NULL,
    provider      text NOT NULL,
    recording_url text NOT NULL,
    status        text NOT NULL,
    rank          smallint NOT NULL,
    duration_s    integer,
    received_at   timestamptz NOT NULL
);
CREATE INDEX call_recordings_call_idx ON call_recordings (call_sid);
