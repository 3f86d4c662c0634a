-- Channel senders (connectors/channels/): what was delivered, and what would have been.
--
-- channel_deliveries is the senders' idempotency ledger: a reply is claimed by its reply_id
-- before it is sent and marked delivered with the provider's id after, so a redelivered
-- sf.outbound record is not sent twice.
CREATE TABLE channel_deliveries (
    reply_id            text PRIMARY KEY,
    channel             text NOT NULL,
    provider            text NOT NULL,
    provider_message_id text,
    status              text NOT NULL DEFAULT 'sending' CHECK (status IN ('sending', 'delivered', 'failed')),
    attempts            integer NOT NULL DEFAULT 1,
    error               text,
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    delivered_at        timestamptz
);

-- channel_outbox holds the replies of channels with no provider credentials configured (the
-- embedded default), so a developer sees what would have been sent: `supportflow outbox`.
CREATE TABLE channel_outbox (
    reply_id   text PRIMARY KEY,
    channel    text NOT NULL,
    recipient  text NOT NULL,
    text       text NOT NULL,
    parts      jsonb NOT NULL DEFAULT '[]'::jsonb,
    subject    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    status     text NOT NULL DEFAULT 'pending'
);

CREATE INDEX channel_outbox_created_at ON channel_outbox (created_at DESC);
