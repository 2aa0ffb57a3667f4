-- Orders. `status` moves pending -> confirmed | cancelled (the checkout saga), then
-- confirmed -> shipped -> delivered (an admin). Money is integer minor units with a currency;
-- every line of an order shares the order's currency.
CREATE TABLE orders (
    id             TEXT PRIMARY KEY,     -- UUIDv7: time-ordered, so ORDER BY id is newest last
    user_id        TEXT NOT NULL,
    status         TEXT NOT NULL,        -- pending | confirmed | cancelled | shipped | delivered
    cancel_reason  TEXT,                 -- set only when cancelled
    total_minor    BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    payment_method TEXT NOT NULL,
    from_cart      BIGINT NOT NULL,      -- 0 | 1
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, id);

-- The lines of an order, with the product's name and unit price as they were when it was
-- ordered (a snapshot: later catalog changes do not touch it). One line per product.
CREATE TABLE order_lines (
    order_id         TEXT NOT NULL,
    line_no          BIGINT NOT NULL,    -- 1, 2, ... in the order the customer gave them
    product_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    unit_price_minor BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
