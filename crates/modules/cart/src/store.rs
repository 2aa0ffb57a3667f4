//! Every SQL statement of the cart module. Portable SQL: SQLite and PostgreSQL alike.

use banyan_db::{Db, now_millis, sqlx};
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub(crate) struct LineRow {
    pub(crate) product_id: String,
    pub(crate) quantity: i64,
    pub(crate) added_at: i64,
}

impl LineRow {
    pub(crate) fn product_id(&self) -> Uuid {
        Uuid::parse_str(&self.product_id).unwrap_or_default()
    }
}

/// At most this many products go into one statement (two parameters each).
const CHUNK: usize = 200;

/// A user's cart lines, oldest first; empty if they have none.
pub(crate) async fn lines(db: &Db, user_id: Uuid) -> Result<Vec<LineRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT product_id, quantity, added_at FROM cart_lines WHERE user_id = $1 \
         ORDER BY added_at, product_id",
    )
    .bind(user_id.to_string())
    .fetch_all(db.reader())
    .await
}

/// Adds `quantity` to a line, creating it if missing, in one statement: only if the line then
/// holds at most `max_quantity` and the cart at most `max_lines` lines. Answers the line's new
/// quantity, or `None` if a limit stopped it (then nothing changed).
///
/// On PostgreSQL two transactions adding different products to a cart one line short of
/// the limit can both pass the count; the limit is a guard against abuse, not an invariant
/// anything relies on.
pub(crate) async fn add(
    conn: &mut AnyConnection,
    user_id: Uuid,
    product_id: Uuid,
    quantity: i64,
    max_quantity: i64,
    max_lines: i64,
) -> Result<Option<i64>, sqlx::Error> {
    // The WHERE on the SELECT also keeps SQLite from reading `ON CONFLICT` as a join clause.
    let row: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO cart_lines (user_id, product_id, quantity, added_at) \
         SELECT $1, $2, $3, $4 \
         WHERE (SELECT COUNT(*) FROM cart_lines WHERE user_id = $1 AND product_id <> $2) < $5 \
         ON CONFLICT (user_id, product_id) DO UPDATE \
         SET quantity = cart_lines.quantity + excluded.quantity \
         WHERE cart_lines.quantity + excluded.quantity <= $6 \
         RETURNING quantity",
    )
    .bind(user_id.to_string())
    .bind(product_id.to_string())
    .bind(quantity)
    .bind(now_millis())
    .bind(max_lines)
    .bind(max_quantity)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(quantity,)| quantity))
}

/// What a line holds, as this transaction sees it; `None` if there is no such line.
pub(crate) async fn line_quantity(
    conn: &mut AnyConnection,
    user_id: Uuid,
    product_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT quantity FROM cart_lines WHERE user_id = $1 AND product_id = $2")
            .bind(user_id.to_string())
            .bind(product_id.to_string())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(quantity,)| quantity))
}

/// Removes one line; `false` if there was none.
pub(crate) async fn remove(
    conn: &mut AnyConnection,
    user_id: Uuid,
    product_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query("DELETE FROM cart_lines WHERE user_id = $1 AND product_id = $2")
        .bind(user_id.to_string())
        .bind(product_id.to_string())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(removed == 1)
}

/// Removes every line of a user's cart; answers how many there were.
pub(crate) async fn clear(conn: &mut AnyConnection, user_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM cart_lines WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(conn)
        .await?
        .rows_affected())
}

/// Removes the lines of `taken` (product, quantity) that hold no more than is taken; answers
/// the products whose lines were removed.
pub(crate) async fn remove_used_up(
    conn: &mut AnyConnection,
    user_id: Uuid,
    taken: &[(Uuid, i64)],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut removed = Vec::new();
    for chunk in taken.chunks(CHUNK) {
        let conditions: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!(
                    "(product_id = ${} AND quantity <= ${})",
                    2 * i + 2,
                    2 * i + 3
                )
            })
            .collect();
        let sql = format!(
            "DELETE FROM cart_lines WHERE user_id = $1 AND ({}) RETURNING product_id",
            conditions.join(" OR ")
        );
        let mut query =
            sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql)).bind(user_id.to_string());
        for (product_id, quantity) in chunk {
            query = query.bind(product_id.to_string()).bind(*quantity);
        }
        removed.extend(
            query
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|(id,)| Uuid::parse_str(&id).unwrap_or_default()),
        );
    }
    Ok(removed)
}

/// Subtracts each quantity of `taken` (product, quantity) from its line, if there is one.
pub(crate) async fn subtract(
    conn: &mut AnyConnection,
    user_id: Uuid,
    taken: &[(Uuid, i64)],
) -> Result<(), sqlx::Error> {
    for chunk in taken.chunks(CHUNK) {
        let cases: Vec<String> = (0..chunk.len())
            .map(|i| format!("WHEN ${} THEN ${}", 2 * i + 2, 2 * i + 3))
            .collect();
        let ids: Vec<String> = (0..chunk.len())
            .map(|i| format!("${}", 2 * i + 2))
            .collect();
        let sql = format!(
            "UPDATE cart_lines SET quantity = quantity - CASE product_id {} ELSE 0 END \
             WHERE user_id = $1 AND product_id IN ({})",
            cases.join(" "),
            ids.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id.to_string());
        for (product_id, quantity) in chunk {
            query = query.bind(product_id.to_string()).bind(*quantity);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}
