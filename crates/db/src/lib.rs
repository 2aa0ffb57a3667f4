//! A database per module.
//!
//! Every module owns its data and reaches it only through the [`Db`] handed to it at start-up:
//!
//! - **SQLite** (the default): one file per module, `<dir>/<module>.db`, in WAL mode. Writes go
//!   through a single-connection writer pool with `BEGIN IMMEDIATE`, so writers queue in
//!   process instead of failing with `SQLITE_BUSY`; reads use a pool of their own.
//! - **PostgreSQL**: one schema per module, named after it. With `role_per_module` (the
//!   default) each module connects as its own role `banyan_<module>`, which owns its schema
//!   and has no rights on any other: the database itself enforces the boundary.
//!
//! Module SQL is written once for both engines: unqualified table names (the schema is pinned
//! by `search_path` on PostgreSQL and by the file on SQLite), `$N` placeholders (SQLite
//! accepts them), and the portable column types `TEXT` and `BIGINT`.
//!
//! # Layout
//! - [`DatabaseConfig`]: where the data lives, with per-module overrides.
//! - [`Db`]: a module's handle: `begin()` for writes, `reader()` for reads.
//! - [`Db::open`]: provisions the module's file or schema (and role) and runs its migrations.

use std::{borrow::Cow, collections::BTreeMap, path::PathBuf, str::FromStr, time::Duration};

use serde::Deserialize;
use sqlx::{
    Any, AnyPool, Executor, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};

pub use sqlx;

mod copy;
#[cfg(feature = "test-util")]
pub mod testing;

pub use copy::{Contents, CopyReport, TableCheck};

/// Where the modules' data lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://<dir>` puts one file per module in `<dir>`; `postgres://…` puts one schema per
    /// module in that database.
    pub url: String,
    /// Per-module overrides, so one module's data can move to a server of its own.
    #[serde(default)]
    pub modules: BTreeMap<String, ModuleDatabaseConfig>,
    /// Connections per module pool (PostgreSQL, and SQLite readers).
    pub max_connections: u32,
    /// How long a query waits for a free connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// SQLite's `synchronous` pragma: `full` survives power loss, `normal` survives a process
    /// crash. See ARCHITECTURE.md for the choice shipped.
    pub sqlite_synchronous: SqliteSynchronous,
    /// On PostgreSQL, connect each module as its own role that can touch only its own schema.
    pub role_per_module: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data".into(),
            modules: BTreeMap::new(),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            sqlite_synchronous: SqliteSynchronous::Full,
            role_per_module: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleDatabaseConfig {
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

impl DatabaseConfig {
    /// The location of one module's data, after its override.
    pub fn location_for(&self, module: &str) -> Result<Location, DbError> {
        let url = self
            .modules
            .get(module)
            .map(|m| m.url.as_str())
            .unwrap_or(&self.url);
        url.parse()
    }

    /// Checks every URL, so that a bad one stops start-up before anything opens.
    pub fn validate(&self) -> Result<(), (String, DbError)> {
        self.url
            .parse::<Location>()
            .map_err(|e| ("database.url".to_owned(), e))?;
        for (module, m) in &self.modules {
            m.url
                .parse::<Location>()
                .map_err(|e| (format!("database.modules.{module}.url"), e))?;
        }
        if self.max_connections == 0 {
            return Err((
                "database.max_connections".into(),
                DbError::Config("must be at least 1".into()),
            ));
        }
        Ok(())
    }
}

/// Where a module's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory holding one SQLite file per module.
    SqliteDir(PathBuf),
    /// A PostgreSQL database holding one schema per module.
    Postgres(String),
}

impl FromStr for Location {
    type Err = DbError;

    fn from_str(url: &str) -> Result<Self, DbError> {
        if let Some(dir) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if dir.is_empty() || dir.contains(['?', '#']) {
                return Err(DbError::Config(format!(
                    "`{url}` is not a usable SQLite directory: expected sqlite://<dir>"
                )));
            }
            Ok(Location::SqliteDir(PathBuf::from(dir)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url::Url::parse(url)
                .map_err(|e| DbError::Config(format!("`{url}` is not a valid URL: {e}")))?;
            Ok(Location::Postgres(url.to_owned()))
        } else {
            Err(DbError::Config(format!(
                "unsupported database URL `{url}`: expected sqlite://<dir> or postgres://…"
            )))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("could not prepare the storage of module `{module}`: {source}")]
    Provision {
        module: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations of module `{module}` failed: {source}")]
    Migrate {
        module: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot move the data: {0}")]
    Move(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// One module's database handle. Cheap to clone.
///
/// It is the only way a module reaches storage; no other module ever holds it.
#[derive(Debug, Clone)]
pub struct Db {
    module: &'static str,
    engine: Engine,
    /// Where write transactions start. On SQLite a single connection, so writers queue here
    /// instead of contending for the file lock; on PostgreSQL the same pool as `reader`.
    writer: AnyPool,
    /// Where plain reads go.
    reader: AnyPool,
}

impl Db {
    /// Opens the module's storage, creating the file or schema (and role) if missing, and runs
    /// each migrator in turn. Each migrator keeps its own history table inside the module's
    /// schema, so module migrations and the bus's messaging tables never collide.
    pub async fn open(
        module: &'static str,
        config: &DatabaseConfig,
        migrators: &[&Migrator],
    ) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        // Processes of one module may start at the same moment (a scheduler starting a
        // deployment's replicas): they provision and migrate in turn, and each after the first
        // finds the work done. On PostgreSQL the turn is an advisory lock while provisioning
        // (see `open_postgres`) and sqlx's own while migrating; a SQLite file has neither, so a
        // lock file beside it is held for both.
        let (db, _turn) = match config.location_for(module)? {
            Location::SqliteDir(dir) => {
                let turn = sqlite_turn(module, &dir).await?;
                (Self::open_sqlite(module, config, dir).await?, Some(turn))
            }
            Location::Postgres(url) => (Self::open_postgres(module, config, &url).await?, None),
        };
        for migrator in migrators {
            migrator
                .run(&db.writer)
                .await
                .map_err(|source| DbError::Migrate { module, source })?;
        }
        tracing::debug!(module, engine = ?db.engine, "Module storage ready.");
        Ok(db)
    }

    async fn open_sqlite(
        module: &'static str,
        config: &DatabaseConfig,
        dir: PathBuf,
    ) -> Result<Self, DbError> {
        // `dir` exists: `sqlite_turn` made it.
        let path = dir.join(format!("{module}.db"));
        let options =
            AnyConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", path.display()))?;
        // WAL lets readers run beside the writer; the busy timeout covers other processes
        // (a second instance of the module) holding the write lock for a moment. It comes
        // first: switching a new file to WAL takes that lock too.
        let pragmas = match config.sqlite_synchronous {
            SqliteSynchronous::Full => {
                "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
            }
            SqliteSynchronous::Normal => {
                "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
            }
        };
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
                // A connection to a local file does not go stale the way a socket does, and the
                // ping would be one more trip to the connection's worker thread per transaction
                // and per read (the round trips are what a checkout costs, ADR 0007).
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(sqlx::raw_sql(pragmas)).await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let writer = pool(1)
            .await
            .map_err(|source| DbError::Provision { module, source })?;
        let reader = pool(config.max_connections)
            .await
            .map_err(|source| DbError::Provision { module, source })?;
        Ok(Self {
            module,
            engine: Engine::Sqlite,
            writer,
            reader,
        })
    }

    async fn open_postgres(
        module: &'static str,
        config: &DatabaseConfig,
        url: &str,
    ) -> Result<Self, DbError> {
        let provision = |source| DbError::Provision { module, source };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect(url)
            .await
            .map_err(provision)?;
        let mut connection = pool.acquire().await.map_err(provision)?;
        // One provisioning at a time in this database: `CREATE SCHEMA IF NOT EXISTS` run by two
        // sessions at once fails one of them on the catalog's unique index, and concurrent
        // GRANTs on one schema fail with "tuple concurrently updated". A session lock, so a
        // failed statement below (the GRANT is allowed to fail) does not end it; it is
        // released when the connection closes, whatever happens.
        let admin = &mut *connection;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "SELECT pg_advisory_lock({PROVISION_LOCK})"
            )))
            .await
            .map_err(provision)?;
        let schema = quote_ident(module);
        let module_url = if config.role_per_module {
            let role = format!("banyan_{module}");
            let role_ident = quote_ident(&role);
            // Roles are cluster-wide and several databases may race to create one: both
            // "already exists" errors are success here.
            let create_role = format!(
                "DO $$ BEGIN CREATE ROLE {role_ident} LOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            );
            admin
                .execute(sqlx::AssertSqlSafe(create_role))
                .await
                .map_err(provision)?;
            // The module's role must be able to SET ROLE for the admin to hand it the schema
            // on managed servers where the admin is no superuser.
            let grant = format!("GRANT {role_ident} TO CURRENT_USER");
            admin.execute(sqlx::AssertSqlSafe(grant)).await.ok();
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role_ident}"
                )))
                .await
                .map_err(provision)?;
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"
                )))
                .await
                .map_err(provision)?;
            let mut parsed = url::Url::parse(url)
                .map_err(|e| DbError::Config(format!("`{url}` is not a valid URL: {e}")))?;
            parsed
                .set_username(&role)
                .map_err(|()| DbError::Config(format!("`{url}` cannot carry a user name")))?;
            parsed.to_string()
        } else {
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}"
                )))
                .await
                .map_err(provision)?;
            url.to_owned()
        };
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "SELECT pg_advisory_unlock({PROVISION_LOCK})"
            )))
            .await
            .map_err(provision)?;
        drop(connection);
        pool.close().await;

        let search_path: std::sync::Arc<str> = format!("SET search_path TO {schema}").into();
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(search_path.to_string()))
                        .await?;
                    Ok(())
                })
            })
            .connect(&module_url)
            .await
            .map_err(provision)?;
        Ok(Self {
            module,
            engine: Engine::Postgres,
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before it writes cannot fail half-way.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.writer.begin().await,
        }
    }

    /// Each pool's connections, open and idle, by role (`writer`, `reader`; PostgreSQL's one
    /// pool is both, and shown once as `shared`), for metrics.
    pub fn pool_usage(&self) -> Vec<(&'static str, u32, usize)> {
        let usage = |pool: &AnyPool| (pool.size(), pool.num_idle());
        match self.engine {
            Engine::Sqlite => {
                let ((w, wi), (r, ri)) = (usage(&self.writer), usage(&self.reader));
                vec![("writer", w, wi), ("reader", r, ri)]
            }
            Engine::Postgres => {
                let (size, idle) = usage(&self.writer);
                vec![("shared", size, idle)]
            }
        }
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// How many write transactions can run at once: one on SQLite (one writer per file), the
    /// pool's size on PostgreSQL.
    pub fn concurrent_writers(&self) -> usize {
        match self.engine {
            Engine::Sqlite => 1,
            Engine::Postgres => self.writer.options().get_max_connections() as usize,
        }
    }

    pub fn module(&self) -> &'static str {
        self.module
    }

    /// Answers whether the database can be reached, for `/ready`.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.reader).await.is_ok()
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Quotes an identifier for PostgreSQL. Module names are compile-time constants, but quoting
/// keeps a mistake from becoming SQL.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The key of the advisory lock that provisioning holds on PostgreSQL (any fixed number; this
/// one spells "banyan" in ASCII).
const PROVISION_LOCK: i64 = 0x62_61_6e_79_61_6e;

/// Waits for this process's turn to provision and migrate `module`'s SQLite file in `dir`, and
/// holds it until the returned file is dropped: an exclusive lock on `<module>.migrations.lock`
/// beside the database, which the OS releases if the process dies.
async fn sqlite_turn(
    module: &'static str,
    dir: &std::path::Path,
) -> Result<std::fs::File, DbError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        DbError::Config(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let path = dir.join(format!("{module}.migrations.lock"));
    let unavailable =
        |e: std::io::Error| DbError::Config(format!("cannot lock {}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(unavailable)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| DbError::Config(format!("waiting for {}: {e}", path.display())))?
        .map_err(unavailable)
}

/// Builds a migrator that keeps its history in `table`, so that several sets of migrations
/// (the module's own, the bus's messaging tables) can live in one schema.
pub fn migrator_with_table(base: &'static Migrator, table: &'static str) -> Migrator {
    Migrator {
        migrations: Cow::Borrowed(&base.migrations),
        table_name: Cow::Borrowed(table),
        ..Migrator::DEFAULT
    }
}

/// The `VALUES` list of a multi-row insert: `rows` groups of `columns` numbered placeholders,
/// `($1, $2), ($3, $4)` for two rows of two. One statement writes every row: one trip to the
/// database instead of one per row.
pub fn values_list(rows: usize, columns: usize) -> String {
    let mut list = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            list.push_str(", ");
        }
        list.push('(');
        for column in 0..columns {
            if column > 0 {
                list.push_str(", ");
            }
            list.push('$');
            list.push_str(&(row * columns + column + 1).to_string());
        }
        list.push(')');
    }
    list
}

/// Milliseconds since the Unix epoch: how Banyan stores instants (portable `BIGINT`).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// At most this many ids go into one `IN (...)` list: far below SQLite's and PostgreSQL's
/// limits on bound parameters, large enough that a request's ids take one statement.
pub const IN_CHUNK: usize = 500;

/// The rows of `select` (a query up to its key column, such as
/// `SELECT id, name FROM products WHERE id`) whose key is one of `ids`, read in statements of
/// at most [`IN_CHUNK`] ids, in no particular order. Ids are bound as text, as Banyan stores
/// them.
pub async fn fetch_by_ids<R>(
    db: &Db,
    select: &str,
    ids: &[uuid::Uuid],
) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IN_CHUNK) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!("{select} IN ({})", placeholders.join(", "));
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        rows.extend(query.fetch_all(db.reader()).await?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_names_a_sqlite_directory_or_a_postgres_database() {
        assert_eq!(
            "sqlite://data".parse::<Location>().unwrap(),
            Location::SqliteDir("data".into())
        );
        assert!(matches!(
            "postgres://u@h/db".parse::<Location>().unwrap(),
            Location::Postgres(_)
        ));
        assert!("mysql://x".parse::<Location>().is_err());
        assert!("sqlite://".parse::<Location>().is_err());
    }

    #[test]
    fn a_bad_override_is_reported_under_its_own_key() {
        let mut config = DatabaseConfig::default();
        config.modules.insert(
            "orders".into(),
            ModuleDatabaseConfig {
                url: "ftp://nope".into(),
            },
        );
        let (key, _) = config.validate().unwrap_err();
        assert_eq!(key, "database.modules.orders.url");
    }
}

#[cfg(test)]
mod values_list_tests {
    #[test]
    fn a_values_list_numbers_every_placeholder_once_row_by_row() {
        assert_eq!(super::values_list(1, 1), "($1)");
        assert_eq!(super::values_list(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::values_list(0, 3), "");
    }
}
