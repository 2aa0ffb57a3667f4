//! Every SQL statement of the users module. Portable SQL: SQLite and PostgreSQL alike.

use banyan_db::{Db, now_millis, sqlx};
use banyan_kit::{Page, auth::Role};
use sqlx::{AnyConnection, FromRow};
use uuid::Uuid;

use crate::model::{Email, Username};

#[derive(Debug, Clone, FromRow)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) email: String,
    pub(crate) password_hash: String,
    pub(crate) role: String,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl UserRow {
    pub(crate) fn id(&self) -> Uuid {
        Uuid::parse_str(&self.id).unwrap_or_default()
    }

    pub(crate) fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Customer)
    }
}

const COLUMNS: &str = "id, username, email, password_hash, role, created_at, updated_at";

/// Which of username and email another account (not `except`) already has.
pub(crate) async fn taken(
    conn: &mut AnyConnection,
    username: &Username,
    email: &Email,
    except: Option<Uuid>,
) -> Result<Option<&'static str>, sqlx::Error> {
    let except = except.map(|id| id.to_string()).unwrap_or_default();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT username, email FROM users WHERE (username = $1 OR email = $2) AND id <> $3",
    )
    .bind(username.as_str())
    .bind(email.as_str())
    .bind(except)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().find_map(|(u, e)| {
        if u == username.as_str() {
            Some("username")
        } else if e == email.as_str() {
            Some("email")
        } else {
            None
        }
    }))
}

pub(crate) async fn email_taken(
    conn: &mut AnyConnection,
    email: &Email,
    except: Uuid,
) -> Result<bool, sqlx::Error> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM users WHERE email = $1 AND id <> $2")
            .bind(email.as_str())
            .bind(except.to_string())
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

pub(crate) async fn insert(
    conn: &mut AnyConnection,
    username: &Username,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> Result<UserRow, sqlx::Error> {
    let now = now_millis();
    let row = UserRow {
        id: Uuid::now_v7().to_string(),
        username: username.as_str().to_owned(),
        email: email.as_str().to_owned(),
        password_hash: password_hash.to_owned(),
        role: role.as_str().to_owned(),
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO users (id, username, email, password_hash, role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.id)
    .bind(&row.username)
    .bind(&row.email)
    .bind(&row.password_hash)
    .bind(&row.role)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(row)
}

pub(crate) async fn find(db: &Db, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(db.reader())
    .await
}

/// Finds an account by username or email (both stored in lower case).
pub(crate) async fn find_by_login(db: &Db, login: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let login = login.trim().to_lowercase();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE username = $1 OR email = $1"
    )))
    .bind(login)
    .fetch_optional(db.reader())
    .await
}

pub(crate) async fn list(db: &Db, page: Page) -> Result<(Vec<UserRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users ORDER BY id LIMIT $1 OFFSET $2"
    )))
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(db.reader())
    .await?;
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(db.reader())
        .await?;
    Ok((rows, total))
}

/// Applies the changes given; returns the row after them, `None` if there is no such user.
pub(crate) async fn update(
    conn: &mut AnyConnection,
    id: Uuid,
    email: Option<&Email>,
    password_hash: Option<&str>,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE users SET email = COALESCE($1, email), password_hash = COALESCE($2, password_hash), \
         updated_at = $3 WHERE id = $4 RETURNING {COLUMNS}"
    )))
    .bind(email.map(|e| e.as_str().to_owned()))
    .bind(password_hash.map(str::to_owned))
    .bind(now_millis())
    .bind(id.to_string())
    .fetch_optional(conn)
    .await
}

/// An account's role as this transaction sees it, and how many admins there are (with a row
/// lock on PostgreSQL, so two admins deleting each other cannot both pass the count).
pub(crate) async fn role_and_admins(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<(Option<String>, i64), sqlx::Error> {
    let role: Option<(String,)> = sqlx::query_as("SELECT role FROM users WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let admins: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM users WHERE role = 'admin'{}",
        if conn.backend_name() == "PostgreSQL" {
            " FOR UPDATE"
        } else {
            ""
        }
    )))
    .fetch_all(&mut *conn)
    .await?;
    Ok((role.map(|(r,)| r), admins.len() as i64))
}

pub(crate) async fn delete(conn: &mut AnyConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id.to_string())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}
