-- Stock per product. `version` grows by one with every change of a row and travels in
-- StockChanged, so read models elsewhere can ignore stale events.
-- Invariant: 0 <= reserved <= on_hand.
CREATE TABLE stock (
    product_id TEXT PRIMARY KEY,
    on_hand    BIGINT NOT NULL,
    reserved   BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per product of a reservation; the reservation id is chosen by the caller (orders
-- use the order id), which makes reserving and releasing idempotent.
CREATE TABLE reservations (
    reservation_id TEXT NOT NULL,
    product_id     TEXT NOT NULL,
    quantity       BIGINT NOT NULL,
    status         TEXT NOT NULL,   -- reserved | released
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (reservation_id, product_id)
);
