-- Accounts. Usernames and emails are stored normalised (lower case), so uniqueness is
-- case-insensitive on both engines.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,   -- argon2id PHC string; never leaves this module
    role          TEXT NOT NULL,   -- customer | admin
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_by_username ON users (username);
CREATE UNIQUE INDEX users_by_email ON users (email);
