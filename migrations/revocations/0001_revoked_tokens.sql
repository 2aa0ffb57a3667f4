-- Per account, the instant (ms since the epoch) before which its tokens are refused, from
-- users.tokens_revoked.v1. Every module keeps its own copy, so that every process knows it
-- again after a restart without asking users.
CREATE TABLE revoked_tokens (
    user_id TEXT PRIMARY KEY,
    not_before_ms BIGINT NOT NULL
);
