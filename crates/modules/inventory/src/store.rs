//! Every SQL statement of the inventory module. Portable SQL: SQLite and PostgreSQL alike.

use banyan_db::{Db, now_millis, sqlx};
use banyan_inventory_contract::{ProductId, StockChanged, StockLevel, StockLine};
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

/// `reservations.status` of a held line.
pub(crate) const RESERVED: &str = "reserved";
/// `reservations.status` of a line given back.
pub(crate) const RELEASED: &str = "released";
/// `reservations.status` of a line whose stock left with its order (taken off `on_hand`).
pub(crate) const COMMITTED: &str = "committed";

/// The product id of a tombstone: the one line, of quantity 0 and status `released`, that
/// marks a reservation id cancelled before anything was reserved under it.
const TOMBSTONE_PRODUCT: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, Clone, FromRow)]
pub(crate) struct StockRow {
    pub(crate) product_id: String,
    pub(crate) on_hand: i64,
    pub(crate) reserved: i64,
    pub(crate) version: i64,
    pub(crate) updated_at: i64,
}

impl StockRow {
    pub(crate) fn product_id(&self) -> Uuid {
        Uuid::parse_str(&self.product_id).unwrap_or_default()
    }

    pub(crate) fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// The event that announces this row as it is now.
    pub(crate) fn changed(&self) -> StockChanged {
        StockChanged {
            product_id: ProductId(self.product_id()),
            on_hand: self.on_hand,
            reserved: self.reserved,
            available: self.available(),
            version: self.version,
        }
    }

    pub(crate) fn level(&self) -> StockLevel {
        StockLevel {
            product_id: ProductId(self.product_id()),
            on_hand: self.on_hand,
            reserved: self.reserved,
            available: self.available(),
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub(crate) struct ReservationRow {
    pub(crate) product_id: String,
    pub(crate) quantity: i64,
    pub(crate) status: String,
}

impl ReservationRow {
    pub(crate) fn line(&self) -> StockLine {
        StockLine {
            product_id: ProductId(Uuid::parse_str(&self.product_id).unwrap_or_default()),
            quantity: self.quantity,
        }
    }
}

const COLUMNS: &str = "product_id, on_hand, reserved, version, updated_at";

pub(crate) async fn find(db: &Db, product_id: Uuid) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stock WHERE product_id = $1"
    )))
    .bind(product_id.to_string())
    .fetch_optional(db.reader())
    .await
}

/// The stock rows among `product_ids` that exist, in no particular order.
pub(crate) async fn find_many(db: &Db, product_ids: &[Uuid]) -> Result<Vec<StockRow>, sqlx::Error> {
    let select = format!("SELECT {COLUMNS} FROM stock WHERE product_id");
    banyan_db::fetch_by_ids(db, &select, product_ids).await
}

/// A product's stock as this transaction sees it.
pub(crate) async fn find_in(
    conn: &mut AnyConnection,
    product_id: Uuid,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM stock WHERE product_id = $1"
    )))
    .bind(product_id.to_string())
    .fetch_optional(conn)
    .await
}

/// What can still be reserved of a product: 0 if it has no stock.
pub(crate) async fn available(
    conn: &mut AnyConnection,
    product_id: Uuid,
) -> Result<i64, sqlx::Error> {
    Ok(find_in(conn, product_id)
        .await?
        .map_or(0, |row| row.available()))
}

/// Sets `on_hand`, creating the row if missing. `None` if that would go below what is
/// reserved; then nothing changes.
pub(crate) async fn set_on_hand(
    conn: &mut AnyConnection,
    product_id: Uuid,
    on_hand: i64,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO stock (product_id, on_hand, reserved, version, updated_at) \
         VALUES ($1, $2, 0, 1, $3) \
         ON CONFLICT (product_id) DO UPDATE SET on_hand = excluded.on_hand, \
         version = stock.version + 1, updated_at = excluded.updated_at \
         WHERE stock.reserved <= excluded.on_hand \
         RETURNING {COLUMNS}"
    )))
    .bind(product_id.to_string())
    .bind(on_hand)
    .bind(now_millis())
    .fetch_optional(conn)
    .await
}

/// Reserves `quantity` of a product if that much is available. `None` if it is not (or the
/// product has no stock); then nothing changes.
pub(crate) async fn take(
    conn: &mut AnyConnection,
    product_id: Uuid,
    quantity: i64,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE stock SET reserved = reserved + $1, version = version + 1, updated_at = $2 \
         WHERE product_id = $3 AND on_hand - reserved >= $1 \
         RETURNING {COLUMNS}"
    )))
    .bind(quantity)
    .bind(now_millis())
    .bind(product_id.to_string())
    .fetch_optional(conn)
    .await
}

/// Gives back `quantity` reserved of a product (never below zero).
pub(crate) async fn give_back(
    conn: &mut AnyConnection,
    product_id: Uuid,
    quantity: i64,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE stock SET reserved = CASE WHEN reserved > $1 THEN reserved - $1 ELSE 0 END, \
         version = version + 1, updated_at = $2 \
         WHERE product_id = $3 \
         RETURNING {COLUMNS}"
    )))
    .bind(quantity)
    .bind(now_millis())
    .bind(product_id.to_string())
    .fetch_optional(conn)
    .await
}

/// The lines of a reservation, whatever their status.
pub(crate) async fn reservation(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT product_id, quantity, status FROM reservations \
         WHERE reservation_id = $1 ORDER BY product_id",
    )
    .bind(reservation_id.to_string())
    .fetch_all(conn)
    .await
}

/// Records the lines of a new reservation as held, in one statement.
pub(crate) async fn insert_reservation_lines(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
    lines: &[StockLine],
) -> Result<(), sqlx::Error> {
    // $1 to $3 are shared by every row; each line adds its product id and quantity.
    let values: Vec<String> = (0..lines.len())
        .map(|i| format!("($1, ${}, ${}, $2, $3)", 4 + 2 * i, 5 + 2 * i))
        .collect();
    let sql = format!(
        "INSERT INTO reservations (reservation_id, product_id, quantity, status, created_at) \
         VALUES {}",
        values.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(reservation_id.to_string())
        .bind(RESERVED)
        .bind(now_millis());
    for line in lines {
        query = query.bind(line.product_id.to_string()).bind(line.quantity);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Marks `reservation_id` released if nothing was ever recorded under it, so that a
/// reservation asked for later under that id (an order cancelled before inventory saw it
/// placed) holds nothing. `false` if the id already had lines.
pub(crate) async fn insert_tombstone(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO reservations (reservation_id, product_id, quantity, status, created_at) \
         SELECT $1, $2, 0, $3, $4 \
         WHERE NOT EXISTS (SELECT 1 FROM reservations WHERE reservation_id = $1)",
    )
    .bind(reservation_id.to_string())
    .bind(TOMBSTONE_PRODUCT)
    .bind(RELEASED)
    .bind(now_millis())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Ends a reservation's held lines as `outcome` (`RELEASED` or `COMMITTED`); returns the
/// lines that were held (none if it ended before).
pub(crate) async fn end_held(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
    outcome: &str,
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE reservations SET status = $1 WHERE reservation_id = $2 AND status = $3 \
         RETURNING product_id, quantity, status",
    )
    .bind(outcome)
    .bind(reservation_id.to_string())
    .bind(RESERVED)
    .fetch_all(conn)
    .await
}

/// Takes `quantity` of a product that was reserved off the shelf: off `on_hand` and off
/// `reserved` alike (neither below zero, so `reserved <= on_hand` still holds).
pub(crate) async fn take_off_hand(
    conn: &mut AnyConnection,
    product_id: Uuid,
    quantity: i64,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE stock SET on_hand = CASE WHEN on_hand > $1 THEN on_hand - $1 ELSE 0 END, \
         reserved = CASE WHEN reserved > $1 THEN reserved - $1 ELSE 0 END, \
         version = version + 1, updated_at = $2 \
         WHERE product_id = $3 \
         RETURNING {COLUMNS}"
    )))
    .bind(quantity)
    .bind(now_millis())
    .bind(product_id.to_string())
    .fetch_optional(conn)
    .await
}
