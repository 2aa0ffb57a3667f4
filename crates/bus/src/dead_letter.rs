//! Dead letters: deliveries that failed every attempt, kept in the subscribing module's own
//! database until someone replays them.
//!
//! Replaying is a request, not an action: it marks the letter `replay_requested`, and the
//! module's relay re-delivers it in whichever process hosts the module. So the CLI can ask for
//! a replay while the server runs, and a request made while it is down is carried out at start.

use banyan_db::{Db, now_millis, sqlx};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::{Envelope, envelope::partition_key};

/// An event that failed every delivery attempt to one subscribing module, as operators see it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    pub id: Uuid,
    /// The subscribing module that failed to handle it.
    pub module: String,
    pub message_id: Uuid,
    /// The event's subject, such as `orders.order_placed.v1`.
    pub subject: String,
    pub correlation_id: String,
    /// The last error.
    pub error: String,
    pub attempts: i64,
    /// `dead`, `replay_requested`, `replaying` or `replayed`.
    pub status: String,
    /// Milliseconds since the epoch.
    pub failed_at_ms: i64,
    /// Milliseconds since the epoch; `null` until replayed.
    pub replayed_at_ms: Option<i64>,
    /// The event, as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
}

/// What the relay needs to re-deliver a letter.
pub(crate) struct StoredLetter {
    pub(crate) id: Uuid,
    pub(crate) envelope: Envelope,
    pub(crate) payload: std::sync::Arc<str>,
    pub(crate) aggregate_key: u64,
}

pub(crate) async fn record(
    db: &Db,
    consumer: &str,
    envelope: &Envelope,
    payload: &str,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let envelope_json =
        serde_json::to_string(envelope).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO dead_letters \
         (id, message_id, subject, consumer, envelope, payload, error, attempts, status, failed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'dead', $9)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(envelope.message_id.to_string())
    .bind(&envelope.subject)
    .bind(consumer)
    .bind(envelope_json)
    .bind(payload)
    .bind(truncate(error))
    .bind(i64::from(attempts))
    .bind(now_millis())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub(crate) async fn record_failed_replay(
    db: &Db,
    letter: Uuid,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE dead_letters SET status = 'dead', error = $1, attempts = attempts + $2, \
         failed_at = $3 WHERE id = $4",
    )
    .bind(truncate(error))
    .bind(i64::from(attempts))
    .bind(now_millis())
    .bind(letter.to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub(crate) async fn mark_replayed(db: &Db, letter: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE dead_letters SET status = 'replayed', replayed_at = $1 WHERE id = $2")
        .bind(now_millis())
        .bind(letter.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Lists a module's dead letters, newest first; `status` filters (`dead`, `replay_requested`,
/// `replaying`, `replayed`).
pub async fn list(
    db: &Db,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, message_id, subject, envelope, payload, error, attempts, status, failed_at, \
         replayed_at FROM dead_letters WHERE ($1 = '' OR status = $1) \
         ORDER BY failed_at DESC, id DESC LIMIT $2",
    )
    .bind(status.unwrap_or(""))
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|row| {
            let envelope: Envelope = serde_json::from_str(row.try_get("envelope")?)
                .map_err(|e| sqlx::Error::Decode(e.into()))?;
            let payload: String = row.try_get("payload")?;
            Ok(DeadLetter {
                id: parse_uuid(row.try_get("id")?)?,
                module: db.module().to_owned(),
                message_id: parse_uuid(row.try_get("message_id")?)?,
                subject: row.try_get("subject")?,
                correlation_id: envelope.correlation_id.to_string(),
                error: row.try_get("error")?,
                attempts: row.try_get("attempts")?,
                status: row.try_get("status")?,
                failed_at_ms: row.try_get("failed_at")?,
                replayed_at_ms: row.try_get("replayed_at")?,
                payload: serde_json::from_str(&payload)
                    .unwrap_or(serde_json::Value::String(payload)),
            })
        })
        .collect()
}

/// Asks for a dead letter to be delivered again. `false` when there is no such letter or it
/// is not dead (already replayed, or a replay is pending).
pub async fn request_replay(db: &Db, id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE dead_letters SET status = 'replay_requested' WHERE id = $1 AND status = 'dead'",
    )
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(updated == 1)
}

/// Claims up to `limit` letters whose replay was asked for (oldest first), marking them
/// `replaying`.
pub(crate) async fn claim_replays(db: &Db, limit: i64) -> Result<Vec<StoredLetter>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query(
        "UPDATE dead_letters SET status = 'replaying' WHERE id IN \
         (SELECT id FROM dead_letters WHERE status = 'replay_requested' ORDER BY failed_at, id LIMIT $1) \
         RETURNING id, envelope, payload",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut letters = rows
        .iter()
        .map(|row| {
            let envelope: Envelope = serde_json::from_str(row.try_get("envelope")?)
                .map_err(|e| sqlx::Error::Decode(e.into()))?;
            let payload: String = row.try_get("payload")?;
            // Dead letters do not keep the aggregate id; the message id spreads them as well.
            let aggregate_key = partition_key(envelope.message_id);
            Ok(StoredLetter {
                id: parse_uuid(row.try_get("id")?)?,
                envelope,
                payload: payload.into(),
                aggregate_key,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    letters.sort_by_key(|l| l.id);
    Ok(letters)
}

/// Puts letters whose replay a crash interrupted back to `replay_requested`.
pub(crate) async fn reset_interrupted_replays(db: &Db) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE dead_letters SET status = 'replay_requested' WHERE status = 'replaying'")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

fn parse_uuid(raw: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(raw).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Keeps error texts to a size worth storing.
fn truncate(error: &str) -> &str {
    match error.char_indices().nth(2_000) {
        Some((at, _)) => &error[..at],
        None => error,
    }
}
