-- Products and their prices. Prices are integer minor units with their currency.
-- `available` is a read model of inventory's stock, fed by its StockChanged events;
-- `stock_version` is the version of the last one applied, so stale events are ignored.
CREATE TABLE products (
    id            TEXT PRIMARY KEY,
    sku           TEXT NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    category      TEXT NOT NULL,   -- a slug: a-z 0-9 -
    price_minor   BIGINT NOT NULL,
    currency      TEXT NOT NULL,   -- ISO 4217
    available     BIGINT NOT NULL DEFAULT 0,
    stock_version BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX products_by_sku ON products (sku);
CREATE INDEX products_by_category ON products (category, id);
