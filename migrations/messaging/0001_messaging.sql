-- The bus's tables, created inside every module's own schema (or SQLite file).
-- Portable SQL: it runs unchanged on SQLite and PostgreSQL.

-- Events written in the same transaction as the state change they announce.
-- A row lives until every subscriber has handled (or dead-lettered) the event.
CREATE TABLE outbox (
    message_id    TEXT PRIMARY KEY,   -- UUIDv7: sorts by creation time
    subject       TEXT NOT NULL,
    aggregate_id  TEXT NOT NULL,
    envelope      TEXT NOT NULL,      -- JSON
    payload       TEXT NOT NULL,      -- JSON
    created_at    BIGINT NOT NULL,    -- ms since epoch
    claimed_until BIGINT NOT NULL,    -- lease: the relay leaves the row alone until then
    attempts      BIGINT NOT NULL
);
CREATE INDEX outbox_by_lease ON outbox (claimed_until, message_id);

-- Message ids this module has already applied: written in the same transaction as the effect.
CREATE TABLE inbox (
    message_id  TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

-- Deliveries that failed every attempt. Listed and replayed through the API and the CLI.
CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY,
    message_id  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    consumer    TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    payload     TEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    status      TEXT NOT NULL,        -- dead | replay_requested | replaying | replayed
    failed_at   BIGINT NOT NULL,
    replayed_at BIGINT
);
CREATE INDEX dead_letters_by_status ON dead_letters (status, failed_at);
