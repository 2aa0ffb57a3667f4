//! A fresh database for one test (behind the `test-util` feature): SQLite in a temporary
//! directory, or, when `BANYAN_TEST_POSTGRES_URL` names a PostgreSQL server, a new database
//! on it (`banyan_test_<uuid>`), dropped with the value.

use std::time::Duration;

use sqlx::{Connection, Executor};

use crate::DatabaseConfig;

/// Where one test's module databases live; removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    config: DatabaseConfig,
    _dir: tempfile::TempDir,
    /// The server's URL and the database's name, when on PostgreSQL.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (config, postgres) = match std::env::var("BANYAN_TEST_POSTGRES_URL") {
            Ok(server) => {
                let (url, name) = fresh_postgres_database(&server).await;
                let config = DatabaseConfig {
                    url,
                    role_per_module: false,
                    ..DatabaseConfig::default()
                };
                (config, Some((server, name)))
            }
            Err(_) => {
                let config = DatabaseConfig {
                    url: format!("sqlite://{}", dir.path().display()),
                    ..DatabaseConfig::default()
                };
                (config, None)
            }
        };
        Self {
            config,
            _dir: dir,
            postgres,
        }
    }

    /// The configuration that opens module databases here.
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }
}

/// Creates a database on `server`; answers its URL and name.
async fn fresh_postgres_database(server: &str) -> (String, String) {
    sqlx::any::install_default_drivers();
    let name = format!("banyan_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::AnyConnection::connect(server)
        .await
        .expect("the test PostgreSQL server answers");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("a test database");
    let _ = admin.close().await;
    let mut url = url::Url::parse(server).expect("BANYAN_TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    (url.to_string(), name)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((server, name)) = self.postgres.take() {
            drop_database(&server, &name);
        }
    }
}

/// Drops database `name` on the PostgreSQL `server` (connections and all), best effort and
/// blocking: for a test's `Drop`, whether the test passed or panicked.
pub fn drop_database(server: &str, name: &str) {
    let (server, name) = (server.to_owned(), name.to_owned());
    block_on_detached(async move {
        sqlx::any::install_default_drivers();
        let connect = sqlx::AnyConnection::connect(&server);
        if let Ok(Ok(mut admin)) = tokio::time::timeout(Duration::from_secs(10), connect).await {
            let drop_it = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(error) = admin.execute(sqlx::AssertSqlSafe(drop_it)).await {
                eprintln!("could not drop test database {name}: {error}");
            }
            let _ = admin.close().await;
        }
    });
}

/// Runs `cleanup` to its end on a thread and runtime of its own. `Drop` cannot await and
/// runs inside the test's runtime, where blocking on a future would panic.
pub fn block_on_detached(cleanup: impl Future<Output = ()> + Send + 'static) {
    let thread = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    });
    let _ = thread.join();
}
