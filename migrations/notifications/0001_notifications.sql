-- Who gets mail: a read model of users' accounts, fed by UserRegistered (and, for a user whose
-- registration has not arrived yet, by asking users once).
CREATE TABLE recipients (
    user_id  TEXT PRIMARY KEY,
    email    TEXT NOT NULL,
    username TEXT NOT NULL
);

-- Notifications sent (the email sink). One per event that caused it, however often the
-- event arrives: `source_message_id` is the causing message's id. Ids are UUIDv7 stamped
-- with the causing event's time, so they sort in the order the events happened.
CREATE TABLE notifications (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    kind              TEXT NOT NULL,   -- welcome | order_confirmed | order_cancelled
    subject           TEXT NOT NULL,
    body              TEXT NOT NULL,
    source_message_id TEXT NOT NULL,
    sent_at           BIGINT NOT NULL  -- ms since epoch
);
CREATE UNIQUE INDEX notifications_by_source ON notifications (source_message_id);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
