-- Email replies in the outbox (no SMTP relay configured, the embedded default): the HTML
-- alternative and the headers the mail would have carried (From, To, Subject, Message-ID,
-- In-Reply-To, References, Date, Auto-Submitted), so its threading can be checked.
ALTER TABLE channel_outbox
    ADD COLUMN html    text,
    ADD COLUMN headers jsonb NOT NULL DEFAULT '{}'::jsonb;
