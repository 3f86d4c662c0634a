-- Exchanges (connectors/backends/commerce/orders.py: CreateExchange): the items come back as a
-- return of kind 'exchange', and the replacement ships as a new order at no charge. The return
-- names that order, so a colleague can follow one from the other.
ALTER TABLE commerce.returns
    ADD COLUMN replacement_order text REFERENCES commerce.orders (order_number) ON DELETE SET NULL;

-- Replacement orders are numbered 0100001 upwards: the shop's and the seed's orders start at
-- 1000001, so the two never compete for a number.
CREATE SEQUENCE commerce.replacement_order_numbers START 100001 MAXVALUE 999999;
