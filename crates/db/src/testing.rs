//! A fresh database for one test (behind the `test-util` feature): SQLite in a temporary
//! directory, or, when `BANYAN_TEST_POSTGRES_URL` names a PostgreSQL server, a new database
//! on it (`banyan_test_<uuid>`), dropped with the value.

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
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop cannot await and runs inside the test's runtime: use a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::AnyConnection::connect(&server).await {
                    let drop_it = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(error) = admin.execute(sqlx::AssertSqlSafe(drop_it)).await {
                        eprintln!("could not drop test database {name}: {error}");
                    }
                    let _ = admin.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
