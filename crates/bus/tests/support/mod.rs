//! What the bus's integration tests share: waiting for a condition, module databases on SQLite
//! and PostgreSQL (a fresh database per test), and a non-idempotent effect guarded by the inbox.
//!
//! PostgreSQL: `BANYAN_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! must reach a server where that user may create databases. If it cannot be reached the
//! PostgreSQL tests fail, unless `BANYAN_SKIP_POSTGRES=1` is set (never honoured when `CI` is).

#![allow(dead_code)]

pub(crate) mod calc;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use banyan_bus::{Delivered, Event, HandlerError, MESSAGING_MIGRATIONS, Outbox};
use banyan_db::{DatabaseConfig, Db};
use sqlx::{AssertSqlSafe, Connection, Executor, postgres::PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

/// How long a test waits for something that should happen, before failing. A hang guard, not
/// an expectation: conditions are normally met in milliseconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `condition` until it holds; fails the test, naming `what`, after [`PATIENCE`].
pub(crate) async fn wait_until(what: &str, condition: impl AsyncFnMut() -> bool) {
    wait_until_within(PATIENCE, what, condition).await;
}

/// [`wait_until`] with a longer hang guard, for recoveries that involve reconnect backoffs
/// (a broker coming back) and so may take tens of seconds on a loaded machine.
#[allow(dead_code)] // Not every test binary that includes this module uses it.
pub(crate) async fn wait_until_within(
    patience: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let started = Instant::now();
    loop {
        if condition().await {
            return;
        }
        if started.elapsed() > patience {
            panic!("gave up after {patience:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Where a test's module databases live: a temporary SQLite directory or a temporary
/// PostgreSQL database. Both are removed when this is dropped.
pub(crate) struct TestStorage {
    pub(crate) config: DatabaseConfig,
    _dir: Option<TempDir>,
    _postgres: Option<PostgresDatabase>,
}

impl TestStorage {
    /// One SQLite file per module in a fresh temporary directory.
    pub(crate) fn sqlite() -> Self {
        let dir = TempDir::new().expect("creating a temporary data directory");
        Self {
            config: sqlite_config(dir.path()),
            _dir: Some(dir),
            _postgres: None,
        }
    }

    /// One schema per module in a fresh PostgreSQL database; `None` when PostgreSQL cannot be
    /// reached and the caller allowed skipping (see the module docs).
    pub(crate) async fn postgres() -> Option<Self> {
        let admin_url = postgres_url();
        let connect = PgConnection::connect(&admin_url);
        let mut admin = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(admin)) => admin,
            Ok(Err(error)) => return postgres_unreachable(&error.to_string()),
            Err(_) => return postgres_unreachable("no connection within 10 s"),
        };
        let name = format!("banyan_test_{}", Uuid::new_v4().simple());
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .expect("creating a test database (the PostgreSQL user needs CREATEDB)");
        let _ = admin.close().await;
        Some(Self {
            config: DatabaseConfig {
                url: with_database(&admin_url, &name),
                ..DatabaseConfig::default()
            },
            _dir: None,
            _postgres: Some(PostgresDatabase { admin_url, name }),
        })
    }

    /// Opens `module`'s database with the bus's tables and the test tables.
    pub(crate) async fn open(&self, module: &'static str) -> Db {
        open_module(&self.config, module).await
    }
}

/// A `sqlite://` configuration for `dir`.
pub(crate) fn sqlite_config(dir: &Path) -> DatabaseConfig {
    DatabaseConfig {
        url: format!("sqlite://{}", dir.display()),
        ..DatabaseConfig::default()
    }
}

/// Opens `module`'s database: the bus's messaging tables, plus the test module's own
/// `items` (a state change) and `counters` (a non-idempotent effect, one row `applied`).
pub(crate) async fn open_module(config: &DatabaseConfig, module: &'static str) -> Db {
    let db = Db::open(module, config, &[&*MESSAGING_MIGRATIONS])
        .await
        .unwrap_or_else(|error| panic!("opening the database of module `{module}`: {error}"));
    let mut tx = db.begin().await.expect("starting the schema transaction");
    for statement in [
        "CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, note TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO counters (name, n) VALUES ('applied', 0) ON CONFLICT (name) DO NOTHING",
    ] {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|error| panic!("creating the test tables of `{module}`: {error}"));
    }
    tx.commit().await.expect("committing the test tables");
    db
}

/// The non-idempotent effect of a subscriber (`n = n + 1`), made effectively once by recording
/// the message in the inbox in the same transaction.
pub(crate) async fn apply_once<E: Event>(
    outbox: &Outbox,
    delivered: &Delivered<E>,
) -> Result<(), HandlerError> {
    let mut uow = outbox.begin().await?;
    if uow.first_delivery(delivered).await? {
        sqlx::query("UPDATE counters SET n = n + 1 WHERE name = 'applied'")
            .execute(&mut *uow)
            .await?;
    }
    uow.commit().await?;
    Ok(())
}

/// How many times a module applied an effect.
pub(crate) async fn applied(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT n FROM counters WHERE name = 'applied'")
        .fetch_one(db.reader())
        .await
        .unwrap_or_else(|error| panic!("reading the counter of `{}`: {error}", db.module()))
}

/// The number of rows in one of a module's tables (`outbox`, `inbox`, `items`, ...).
pub(crate) async fn rows(db: &Db, table: &'static str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(db.reader())
        .await
        .unwrap_or_else(|error| panic!("counting `{}.{table}`: {error}", db.module()))
}

// ------------------------------------------------------------------------------ PostgreSQL

fn postgres_url() -> String {
    std::env::var("BANYAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn postgres_unreachable(error: &str) -> Option<TestStorage> {
    // The URL is not printed: it may hold a password.
    if std::env::var_os("CI").is_some() {
        panic!(
            "PostgreSQL (BANYAN_TEST_POSTGRES_URL or its default) is unreachable: {error}. \
             CI must run the PostgreSQL tests."
        );
    }
    if std::env::var("BANYAN_SKIP_POSTGRES").as_deref() == Ok("1") {
        println!("SKIPPED: PostgreSQL unreachable ({error})");
        return None;
    }
    panic!(
        "PostgreSQL (BANYAN_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres) \
         is unreachable: {error}. Start it, point BANYAN_TEST_POSTGRES_URL at a server, or set \
         BANYAN_SKIP_POSTGRES=1 to skip the PostgreSQL tests."
    );
}

/// `url` with its database replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |at| at + 3);
    let base = match base[authority..].find('/') {
        Some(at) => &base[..authority + at],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// A test's own database, dropped (best effort, connections and all) when the test ends,
/// whether it passed or panicked.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        banyan_db::testing::drop_database(&self.admin_url, &self.name);
    }
}
