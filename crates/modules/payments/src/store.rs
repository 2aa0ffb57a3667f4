//! Every SQL statement of the payments module. Portable SQL: SQLite and PostgreSQL alike.

use banyan_db::{Db, now_millis, sqlx};
use banyan_message::{Currency, Money};
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

use crate::model::Intent;

/// `payments.status` of a charge that went through.
pub(crate) const COMPLETED: &str = "completed";
/// `payments.status` of a charge the provider refused.
pub(crate) const FAILED: &str = "failed";

#[derive(Debug, Clone, FromRow)]
struct IntentRow {
    order_id: String,
    user_id: String,
    amount_minor: i64,
    currency: String,
    payment_method: String,
}

impl TryFrom<IntentRow> for Intent {
    type Error = sqlx::Error;

    fn try_from(row: IntentRow) -> Result<Self, sqlx::Error> {
        let currency = Currency::parse(&row.currency).map_err(|e| sqlx::Error::Decode(e.into()))?;
        Ok(Intent {
            order_id: parse_id(&row.order_id),
            user_id: parse_id(&row.user_id),
            amount: Money::new(row.amount_minor, currency),
            payment_method: row.payment_method,
        })
    }
}

/// A charge, completed or failed.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub(crate) struct PaymentRow {
    pub(crate) id: String,
    pub(crate) order_id: String,
    pub(crate) user_id: String,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) status: String,
    pub(crate) failure_reason: Option<String>,
    pub(crate) created_at: i64,
}

impl PaymentRow {
    pub(crate) fn id(&self) -> Uuid {
        parse_id(&self.id)
    }

    pub(crate) fn order_id(&self) -> Uuid {
        parse_id(&self.order_id)
    }

    pub(crate) fn user_id(&self) -> Uuid {
        parse_id(&self.user_id)
    }
}

fn parse_id(raw: &str) -> Uuid {
    Uuid::parse_str(raw).unwrap_or_default()
}

const PAYMENT_COLUMNS: &str =
    "id, order_id, user_id, amount_minor, currency, status, failure_reason, created_at";

/// Records what an order asks to be charged; an intent recorded before is kept as it is.
pub(crate) async fn insert_intent(
    conn: &mut AnyConnection,
    intent: &Intent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_intents \
         (order_id, user_id, amount_minor, currency, payment_method, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(intent.order_id.to_string())
    .bind(intent.user_id.to_string())
    .bind(intent.amount.amount_minor)
    .bind(intent.amount.currency.as_str())
    .bind(&intent.payment_method)
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// What an order asks to be charged, if its `OrderPlaced` was recorded.
pub(crate) async fn find_intent(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<Option<Intent>, sqlx::Error> {
    let row: Option<IntentRow> = sqlx::query_as(
        "SELECT order_id, user_id, amount_minor, currency, payment_method \
         FROM payment_intents WHERE order_id = $1",
    )
    .bind(order_id.to_string())
    .fetch_optional(conn)
    .await?;
    row.map(Intent::try_from).transpose()
}

/// Notes that an order's stock is held before its intent is known.
pub(crate) async fn insert_early_reservation(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO early_reservations (order_id, received_at) VALUES ($1, $2) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(now_millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the note that an order's stock was held before its intent was known: `true` if
/// there was one (the order is to be charged now).
pub(crate) async fn take_early_reservation(
    conn: &mut AnyConnection,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM early_reservations WHERE order_id = $1")
        .bind(order_id.to_string())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

/// Records a charge. `false` if the order has one already: then nothing changes.
pub(crate) async fn insert_payment(
    conn: &mut AnyConnection,
    row: &PaymentRow,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (order_id) DO NOTHING"
    )))
    .bind(&row.id)
    .bind(&row.order_id)
    .bind(&row.user_id)
    .bind(row.amount_minor)
    .bind(&row.currency)
    .bind(&row.status)
    .bind(row.failure_reason.as_deref())
    .bind(row.created_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The payment of an order, if it was charged.
pub(crate) async fn find_payment(
    db: &Db,
    order_id: Uuid,
) -> Result<Option<PaymentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1"
    )))
    .bind(order_id.to_string())
    .fetch_optional(db.reader())
    .await
}
