-- Failed identity checks (crm.verify_identity), the count behind the lockout of issue 15.
--
-- Kept in the backend that owns the identity check, not in the session: a new session, another
-- channel, a restarted or different worker all see the same rows. One row per failed check;
-- `source` is the channel address the attempt came from (`<channel>:<sender>`), NULL when the
-- caller did not say. `customer_cleared_at` is set when the customer later verifies: the row then
-- no longer counts against the customer, but still against its source (a guesser cannot wipe the
-- source's record by verifying their own account). No foreign key: checks for a customer id the
-- shop does not know fail, and count, too.
CREATE TABLE commerce.identity_failures (
    failure_id          bigserial PRIMARY KEY,
    customer_id         text NOT NULL,
    source              text,
    failed_at           timestamptz NOT NULL,
    customer_cleared_at timestamptz
);
CREATE INDEX identity_failures_customer_idx ON commerce.identity_failures (customer_id, failed_at)
    WHERE customer_cleared_at IS NULL;
CREATE INDEX identity_failures_source_idx ON commerce.identity_failures (source, failed_at)
    WHERE source IS NOT NULL;
