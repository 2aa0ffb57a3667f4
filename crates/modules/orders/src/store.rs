//! Every SQL statement of the orders module. Portable SQL: SQLite and PostgreSQL alike.
//!
//! An order is read with its lines in one query (a join of the module's own two tables).

use banyan_db::{Db, now_millis, sqlx};
use banyan_message::{Currency, Money};
use banyan_orders_contract::{
    OrderId, OrderLine, OrderSummary, OrderSummaryLine, ProductId, UserId,
};
use sqlx::{AnyConnection, FromRow, any::AnyRow};
use uuid::Uuid;

use crate::model::Status;

#[derive(Debug, Clone, FromRow)]
pub(crate) struct OrderRow {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) status: String,
    pub(crate) cancel_reason: Option<String>,
    pub(crate) total_minor: i64,
    pub(crate) currency: String,
    pub(crate) payment_method: String,
    pub(crate) from_cart: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl OrderRow {
    pub(crate) fn id(&self) -> Uuid {
        Uuid::parse_str(&self.id).unwrap_or_default()
    }

    pub(crate) fn user_id(&self) -> Uuid {
        Uuid::parse_str(&self.user_id).unwrap_or_default()
    }

    pub(crate) fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Pending)
    }

    pub(crate) fn total(&self) -> Money {
        money(self.total_minor, &self.currency)
    }
}

/// One line of an order. The line's currency is read as `line_currency`, so that a row of
/// the join holds the order's and the line's without clashing.
#[derive(Debug, Clone, FromRow)]
pub(crate) struct LineRow {
    pub(crate) order_id: String,
    pub(crate) line_no: i64,
    pub(crate) product_id: String,
    pub(crate) name: String,
    pub(crate) unit_price_minor: i64,
    #[sqlx(rename = "line_currency")]
    pub(crate) currency: String,
    pub(crate) quantity: i64,
}

impl LineRow {
    pub(crate) fn new(order_id: &str, line_no: i64, line: &OrderLine) -> Self {
        Self {
            order_id: order_id.to_owned(),
            line_no,
            product_id: line.product_id.to_string(),
            name: line.name.clone(),
            unit_price_minor: line.unit_price.amount_minor,
            currency: line.unit_price.currency.to_string(),
            quantity: line.quantity,
        }
    }

    pub(crate) fn product_id(&self) -> Uuid {
        Uuid::parse_str(&self.product_id).unwrap_or_default()
    }

    pub(crate) fn unit_price(&self) -> Money {
        money(self.unit_price_minor, &self.currency)
    }

    /// The unit price times the quantity; it was checked to fit when the order was placed.
    pub(crate) fn line_total(&self) -> Money {
        let unit = self.unit_price();
        unit.times(self.quantity)
            .unwrap_or(Money::new(i64::MAX, unit.currency))
    }
}

/// The currency was checked before it was stored.
fn money(amount_minor: i64, currency: &str) -> Money {
    Money::new(
        amount_minor,
        Currency::parse(currency).unwrap_or(Currency::EUR),
    )
}

/// An order with its lines, in line order.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) row: OrderRow,
    pub(crate) lines: Vec<LineRow>,
}

impl Order {
    /// The order as other modules, and the HTTP API, show it. A reason is shown only for
    /// a cancelled order.
    pub(crate) fn summary(&self) -> OrderSummary {
        let row = &self.row;
        OrderSummary {
            order_id: OrderId(row.id()),
            user_id: UserId(row.user_id()),
            status: row.status.clone(),
            cancel_reason: if row.status() == Status::Cancelled {
                row.cancel_reason.clone()
            } else {
                None
            },
            lines: self
                .lines
                .iter()
                .map(|line| OrderSummaryLine {
                    product_id: ProductId(line.product_id()),
                    name: line.name.clone(),
                    unit_price: line.unit_price(),
                    quantity: line.quantity,
                    line_total: line.line_total(),
                })
                .collect(),
            total: row.total(),
            payment_method: row.payment_method.clone(),
            from_cart: row.from_cart != 0,
            created_at: banyan_kit::timestamp(row.created_at),
            updated_at: banyan_kit::timestamp(row.updated_at),
        }
    }
}

const ORDER_COLUMNS: &str = "id, user_id, status, cancel_reason, total_minor, currency, \
                             payment_method, from_cart, created_at, updated_at";

/// The columns of the join `orders o JOIN order_lines l`, named as the row types read them.
const JOINED_COLUMNS: &str = "o.id AS id, o.user_id AS user_id, o.status AS status, \
     o.cancel_reason AS cancel_reason, o.total_minor AS total_minor, o.currency AS currency, \
     o.payment_method AS payment_method, o.from_cart AS from_cart, o.created_at AS created_at, \
     o.updated_at AS updated_at, l.order_id AS order_id, l.line_no AS line_no, \
     l.product_id AS product_id, l.name AS name, l.unit_price_minor AS unit_price_minor, \
     l.currency AS line_currency, l.quantity AS quantity";

/// Groups rows of the join, ordered by order then line, into orders.
fn group(rows: &[AnyRow]) -> Result<Vec<Order>, sqlx::Error> {
    let mut orders: Vec<Order> = Vec::new();
    for row in rows {
        let line = LineRow::from_row(row)?;
        match orders.last_mut() {
            Some(order) if order.row.id == line.order_id => order.lines.push(line),
            _ => orders.push(Order {
                row: OrderRow::from_row(row)?,
                lines: vec![line],
            }),
        }
    }
    Ok(orders)
}

/// Inserts an order and its lines: two statements, whatever the number of lines.
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    order: &OrderRow,
    lines: &[LineRow],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, total_minor, currency, payment_method, \
         from_cart, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&order.id)
    .bind(&order.user_id)
    .bind(&order.status)
    .bind(order.total_minor)
    .bind(&order.currency)
    .bind(&order.payment_method)
    .bind(order.from_cart)
    .bind(order.created_at)
    .bind(order.updated_at)
    .execute(&mut *conn)
    .await?;
    let sql = format!(
        "INSERT INTO order_lines \
         (order_id, line_no, product_id, name, unit_price_minor, currency, quantity) VALUES {}",
        banyan_db::values_list(lines.len(), 7)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for line in lines {
        query = query
            .bind(&line.order_id)
            .bind(line.line_no)
            .bind(&line.product_id)
            .bind(&line.name)
            .bind(line.unit_price_minor)
            .bind(&line.currency)
            .bind(line.quantity);
    }
    query.execute(conn).await?;
    Ok(())
}

/// An order with its lines, in one query.
pub(crate) async fn find(db: &Db, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOINED_COLUMNS} FROM orders o JOIN order_lines l ON l.order_id = o.id \
         WHERE o.id = $1 ORDER BY l.line_no"
    )))
    .bind(id.to_string())
    .fetch_all(db.reader())
    .await?;
    Ok(group(&rows)?.into_iter().next())
}

/// A page of a user's orders with their lines, newest first, in one query.
pub(crate) async fn list_for_user(
    db: &Db,
    user_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOINED_COLUMNS} FROM \
         (SELECT id, user_id, status, cancel_reason, total_minor, currency, payment_method, \
          from_cart, created_at, updated_at FROM orders WHERE user_id = $1 \
          ORDER BY id DESC LIMIT $2 OFFSET $3) o \
         JOIN order_lines l ON l.order_id = o.id ORDER BY o.id DESC, l.line_no"
    )))
    .bind(user_id.to_string())
    .bind(limit)
    .bind(offset)
    .fetch_all(db.reader())
    .await?;
    group(&rows)
}

pub(crate) async fn count_for_user(db: &Db, user_id: Uuid) -> Result<i64, sqlx::Error> {
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders WHERE user_id = $1")
        .bind(user_id.to_string())
        .fetch_one(db.reader())
        .await?;
    Ok(total)
}

/// An order's status as this transaction sees it; `None` if there is no such order.
pub(crate) async fn status_in(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let found: Option<(String,)> = sqlx::query_as("SELECT status FROM orders WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    Ok(found.map(|(status,)| status))
}

/// An order's row as this transaction sees it.
pub(crate) async fn row_in(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(conn)
    .await
}

/// Ends a pending order with `status` (and `reason` when cancelled). `None` if the order is
/// not pending (or does not exist); then nothing changes.
pub(crate) async fn end_pending(
    conn: &mut AnyConnection,
    id: Uuid,
    status: Status,
    reason: Option<&str>,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET status = $1, cancel_reason = $2, updated_at = $3 \
         WHERE id = $4 AND status = 'pending' RETURNING {ORDER_COLUMNS}"
    )))
    .bind(status.as_str())
    .bind(reason.map(str::to_owned))
    .bind(now_millis())
    .bind(id.to_string())
    .fetch_optional(conn)
    .await
}

/// Moves an order from `from` to `to`; `false` if it was not (or no longer) `from`.
pub(crate) async fn move_status(
    conn: &mut AnyConnection,
    id: Uuid,
    from: Status,
    to: Status,
) -> Result<bool, sqlx::Error> {
    let moved =
        sqlx::query("UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to.as_str())
            .bind(now_millis())
            .bind(id.to_string())
            .bind(from.as_str())
            .execute(conn)
            .await?
            .rows_affected();
    Ok(moved == 1)
}
