-- The stock invariant, enforced by the database itself: stock never goes below zero and never
-- more is reserved than is on hand, whatever a handler does. (A rebuild, because SQLite cannot
-- add a constraint to an existing table; the same SQL runs on PostgreSQL.)
CREATE TABLE stock_checked (
    product_id TEXT PRIMARY KEY,
    on_hand    BIGINT NOT NULL,
    reserved   BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (on_hand >= 0 AND reserved >= 0 AND reserved <= on_hand)
);
INSERT INTO stock_checked (product_id, on_hand, reserved, version, updated_at)
    SELECT product_id, on_hand, reserved, version, updated_at FROM stock;
DROP TABLE stock;
ALTER TABLE stock_checked RENAME TO stock;
