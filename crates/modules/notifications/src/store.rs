//! Every SQL statement of the notifications module. Portable SQL: SQLite and PostgreSQL alike.

use banyan_db::{Db, now_millis, sqlx};
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

use crate::model::Recipient;

#[derive(Debug, Clone, FromRow)]
pub(crate) struct RecipientRow {
    pub(crate) email: String,
    pub(crate) username: String,
}

#[derive(Debug, Clone, FromRow)]
pub(crate) struct NotificationRow {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) kind: String,
    pub(crate) subject: String,
    pub(crate) body: String,
    pub(crate) source_message_id: String,
    pub(crate) sent_at: i64,
}

impl NotificationRow {
    pub(crate) fn id(&self) -> Uuid {
        Uuid::parse_str(&self.id).unwrap_or_default()
    }

    pub(crate) fn user_id(&self) -> Uuid {
        Uuid::parse_str(&self.user_id).unwrap_or_default()
    }

    pub(crate) fn source_message_id(&self) -> Uuid {
        Uuid::parse_str(&self.source_message_id).unwrap_or_default()
    }
}

const COLUMNS: &str = "id, user_id, kind, subject, body, source_message_id, sent_at";

pub(crate) async fn find_recipient(
    db: &Db,
    user_id: Uuid,
) -> Result<Option<RecipientRow>, sqlx::Error> {
    sqlx::query_as("SELECT email, username FROM recipients WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_optional(db.reader())
        .await
}

/// Records a recipient unless one is already known for that user (the first word stays).
pub(crate) async fn add_recipient(
    conn: &mut AnyConnection,
    recipient: &Recipient,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recipients (user_id, email, username) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(recipient.user_id.to_string())
    .bind(&recipient.email)
    .bind(&recipient.username)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a notification sent; `false` if one was already sent for `source_message_id`
/// (then nothing changes).
pub(crate) async fn insert_notification(
    conn: &mut AnyConnection,
    id: Uuid,
    user_id: Uuid,
    kind: &str,
    subject: &str,
    body: &str,
    source_message_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, subject, body, source_message_id, sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (source_message_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(user_id.to_string())
    .bind(kind)
    .bind(subject)
    .bind(body)
    .bind(source_message_id.to_string())
    .bind(now_millis())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A user's notifications, newest first.
pub(crate) async fn list(
    db: &Db,
    user_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 \
         ORDER BY id DESC LIMIT $2 OFFSET $3"
    )))
    .bind(user_id.to_string())
    .bind(limit)
    .bind(offset)
    .fetch_all(db.reader())
    .await
}

pub(crate) async fn count(db: &Db, user_id: Uuid) -> Result<i64, sqlx::Error> {
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM notifications WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_one(db.reader())
        .await?;
    Ok(total)
}
