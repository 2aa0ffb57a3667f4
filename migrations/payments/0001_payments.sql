-- What an order asks to be charged, recorded from OrderPlaced. The charge itself waits for
-- InventoryReserved (the stock is held), so the amount and the payment method are kept here.
CREATE TABLE payment_intents (
    order_id       TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    amount_minor   BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    payment_method TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- InventoryReserved events that arrived before their order's OrderPlaced (a redelivery can
-- overtake): the order is charged as soon as its intent is recorded.
CREATE TABLE early_reservations (
    order_id    TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);

-- One charge per order at most: UNIQUE (order_id) holds even when events arrive twice or at
-- once.
CREATE TABLE payments (
    id             TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL UNIQUE,
    user_id        TEXT NOT NULL,
    amount_minor   BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    status         TEXT NOT NULL,   -- completed | failed
    failure_reason TEXT,            -- payment_declined | payment_over_limit | payment_failed
    created_at     BIGINT NOT NULL
);
