-- Refunds judged against the tenant's refund policy (connectors/backends/commerce/payments.py).
--   items:       the order lines a refund paid back ([{"sku", "qty"}]), so a line is never refunded
--                twice and the amount comes from the order, never from a typed figure.
--   automatic:   issued by the agent alone; only these count against the automatic limits (per order,
--                per customer in a rolling window). A cancellation's refund of an unshipped order and
--                a refund a human approved are not automatic.
--   approved_by: who approved a refund above the automatic limit (the workspace's audit trail).
ALTER TABLE commerce.refunds ADD COLUMN items jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE commerce.refunds ADD COLUMN automatic boolean NOT NULL DEFAULT false;
ALTER TABLE commerce.refunds ADD COLUMN approved_by text;
CREATE INDEX refunds_automatic_idx ON commerce.refunds (created_at) WHERE automatic;
