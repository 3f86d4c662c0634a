-- The default e-commerce tenant's backend: CRM, orders, payments (connectors/commerce/).
-- Its own schema, so its `customers` never meets the conversation store's `public.customers`.
-- Rows the seed writes carry deterministic ids (or a `seed:` idempotency key), so seeding twice
-- inserts nothing new. Rows the tools write carry the call's idempotency key, UNIQUE, and every
-- write is also recorded once in `action_log`.

CREATE SCHEMA commerce;

CREATE TABLE commerce.customers (
    customer_id text PRIMARY KEY CHECK (customer_id ~ '^C[0-9]{6}$'),
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    phone       text NOT NULL,
    zip         text NOT NULL,
    tier        text NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'silver', 'gold', 'platinum')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE commerce.addresses (
    address_id  text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES commerce.customers ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('shipping', 'billing')),
    lines       text[] NOT NULL,
    city        text NOT NULL,
    zip         text NOT NULL,
    country     text NOT NULL,
    is_default  boolean NOT NULL DEFAULT false
);
CREATE INDEX addresses_customer_idx ON commerce.addresses (customer_id);
-- at most one default address of each kind per customer
CREATE UNIQUE INDEX addresses_one_default_idx ON commerce.addresses (customer_id, kind) WHERE is_default;

CREATE TABLE commerce.payment_methods (
    payment_method_id text PRIMARY KEY,
    customer_id       text NOT NULL REFERENCES commerce.customers ON DELETE CASCADE,
    kind              text NOT NULL CHECK (kind IN ('card', 'paypal', 'bank')),
    label             text NOT NULL,
    is_default        boolean NOT NULL DEFAULT false
);
CREATE INDEX payment_methods_customer_idx ON commerce.payment_methods (customer_id);

-- the catalog `orders.modify_items` adds from; a price is in the order's currency
CREATE TABLE commerce.products (
    sku        text PRIMARY KEY,
    name       text NOT NULL,
    unit_price numeric(12, 2) NOT NULL CHECK (unit_price > 0)
);

CREATE TABLE commerce.orders (
    order_number     text PRIMARY KEY CHECK (order_number ~ '^[0-9]{7}$'),
    customer_id      text NOT NULL REFERENCES commerce.customers ON DELETE CASCADE,
    status           text NOT NULL
                     CHECK (status IN ('pending', 'processing', 'shipped', 'delivered', 'cancelled', 'returned')),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total            numeric(12, 2) NOT NULL CHECK (total >= 0),
    -- the address as it was when the order was placed (or changed by the customer)
    shipping_address jsonb NOT NULL,
    placed_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX orders_customer_idx ON commerce.orders (customer_id, placed_at DESC);
CREATE INDEX orders_status_idx ON commerce.orders (status);

CREATE TABLE commerce.order_items (
    order_number text NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    sku          text NOT NULL,
    name         text NOT NULL,
    qty          integer NOT NULL CHECK (qty > 0),
    unit_price   numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_number, sku)
);

CREATE TABLE commerce.shipments (
    shipment_id     text PRIMARY KEY,
    order_number    text NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    carrier         text NOT NULL,
    tracking_number text NOT NULL,
    status          text NOT NULL CHECK (status IN ('label_created', 'in_transit', 'delivered')),
    shipped_at      timestamptz,
    eta             date,
    delivered_at    timestamptz
);
CREATE INDEX shipments_order_idx ON commerce.shipments (order_number);
CREATE INDEX shipments_tracking_idx ON commerce.shipments (tracking_number);

CREATE TABLE commerce.payments (
    payment_id        text PRIMARY KEY,
    order_number      text NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    payment_method_id text NOT NULL REFERENCES commerce.payment_methods,
    amount            numeric(12, 2) NOT NULL CHECK (amount >= 0),
    status            text NOT NULL CHECK (status IN ('captured', 'failed', 'refunded', 'partially_refunded')),
    captured_at       timestamptz
);
CREATE INDEX payments_order_idx ON commerce.payments (order_number);

CREATE SEQUENCE commerce.refund_numbers;
CREATE TABLE commerce.refunds (
    refund_id       text PRIMARY KEY DEFAULT 'RF-' || lpad(nextval('commerce.refund_numbers')::text, 6, '0'),
    order_number    text NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    payment_id      text NOT NULL REFERENCES commerce.payments ON DELETE CASCADE,
    amount          numeric(12, 2) NOT NULL CHECK (amount > 0),
    reason          text NOT NULL DEFAULT '',
    status          text NOT NULL CHECK (status IN ('pending', 'succeeded')),
    idempotency_key text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- owned by the column, so `TRUNCATE ... RESTART IDENTITY` (seed --reset) restarts the numbers
ALTER SEQUENCE commerce.refund_numbers OWNED BY commerce.refunds.refund_id;
CREATE INDEX refunds_order_idx ON commerce.refunds (order_number);
CREATE INDEX refunds_payment_idx ON commerce.refunds (payment_id);

CREATE TABLE commerce.invoices (
    number       text PRIMARY KEY CHECK (number ~ '^INV-[0-9]+$'),
    order_number text NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    amount       numeric(12, 2) NOT NULL,
    issued_at    timestamptz NOT NULL,
    url          text NOT NULL
);
CREATE INDEX invoices_order_idx ON commerce.invoices (order_number);

CREATE TABLE commerce.subscriptions (
    subscription_id text PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES commerce.customers ON DELETE CASCADE,
    plan            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('active', 'paused', 'cancelled')),
    renews_at       date
);
CREATE INDEX subscriptions_customer_idx ON commerce.subscriptions (customer_id);

CREATE SEQUENCE commerce.return_numbers;
CREATE TABLE commerce.returns (
    return_id       text PRIMARY KEY DEFAULT 'RT-' || lpad(nextval('commerce.return_numbers')::text, 6, '0'),
    order_number    text NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('return', 'exchange')),
    -- [{"sku": ..., "qty": ...}]
    items           jsonb NOT NULL,
    reason          text NOT NULL DEFAULT '',
    status          text NOT NULL CHECK (status IN ('requested', 'received', 'completed', 'rejected')),
    idempotency_key text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE commerce.return_numbers OWNED BY commerce.returns.return_id;
CREATE INDEX returns_order_idx ON commerce.returns (order_number);

CREATE SEQUENCE commerce.case_numbers;
CREATE TABLE commerce.cases (
    case_id         text PRIMARY KEY DEFAULT 'CS-' || lpad(nextval('commerce.case_numbers')::text, 6, '0'),
    customer_id     text NOT NULL REFERENCES commerce.customers ON DELETE CASCADE,
    subject         text NOT NULL,
    description     text NOT NULL,
    priority        text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'solved', 'closed')),
    idempotency_key text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE commerce.case_numbers OWNED BY commerce.cases.case_id;
CREATE INDEX cases_customer_idx ON commerce.cases (customer_id, created_at DESC);

CREATE TABLE commerce.notes (
    note_id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES commerce.customers ON DELETE CASCADE,
    text            text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notes_customer_idx ON commerce.notes (customer_id, created_at DESC);

-- every write a tool made, once per idempotency key; a repeated key returns `result` unchanged
CREATE TABLE commerce.action_log (
    idempotency_key text PRIMARY KEY,
    tool            text NOT NULL,
    customer_id     text NOT NULL,
    arguments       jsonb NOT NULL,
    -- NULL only inside the writing transaction, before the action finished
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX action_log_customer_idx ON commerce.action_log (customer_id, created_at DESC);
