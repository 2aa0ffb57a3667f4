-- Carts: one per customer, named by their user id; a cart is its lines (no lines, no cart).
-- `added_at` is when the line was first created (adding more keeps it), so a cart reads
-- oldest line first. Invariants: 1 <= quantity <= 1000; at most 100 lines per user.
CREATE TABLE cart_lines (
    user_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity   BIGINT NOT NULL,
    added_at   BIGINT NOT NULL,   -- ms since epoch
    PRIMARY KEY (user_id, product_id)
);
