//! The module boundary, enforced twice: by Cargo's dependency graph and by PostgreSQL roles.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::process::Command;

use banyan_db::{DatabaseConfig, Db, sqlx};
use banyan_e2e::PgDatabase;
use serde_json::Value;

/// Module crates live in `crates/modules/<m>/`; their contracts in `crates/modules/<m>/contract/`.
fn workspace_packages() -> Vec<Value> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    metadata["packages"]
        .as_array()
        .expect("a package list")
        .clone()
}

fn kind(package: &Value) -> &'static str {
    let manifest = package["manifest_path"].as_str().unwrap_or_default();
    if manifest.contains("/crates/modules/") && manifest.contains("/contract/") {
        "contract"
    } else if manifest.contains("/crates/modules/") {
        "module"
    } else {
        "other"
    }
}

#[test]
fn no_module_crate_depends_on_another_module_crate() {
    let packages = workspace_packages();
    let modules: Vec<&str> = packages
        .iter()
        .filter(|p| kind(p) == "module")
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert!(modules.len() >= 3, "module crates found: {modules:?}");
    let mut violations = Vec::new();
    for package in packages.iter().filter(|p| kind(p) != "other") {
        let name = package["name"].as_str().unwrap_or_default();
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let dep = dependency["name"].as_str().unwrap_or_default();
            if modules.contains(&dep) && dep != name {
                violations.push(format!("{name} -> {dep}"));
            }
            if dep == "banyan-app" {
                violations.push(format!("{name} -> {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "module boundary crossed: {violations:?}"
    );
}

#[test]
fn a_contract_crate_holds_only_the_published_language() {
    // Contracts may use the message kit, serde, uuid, other contracts and (for their schemas
    // in the API document, behind a feature) utoipa: nothing with logic, storage or transport.
    let allowed = ["banyan-message", "serde", "serde_json", "uuid", "utoipa"];
    for package in workspace_packages()
        .iter()
        .filter(|p| kind(p) == "contract")
    {
        let name = package["name"].as_str().unwrap_or_default();
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let dep = dependency["name"].as_str().unwrap_or_default();
            assert!(
                allowed.contains(&dep) || dep.ends_with("-contract"),
                "contract {name} depends on {dep}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_a_module_cannot_read_another_modules_schema() {
    let Some(database) = PgDatabase::create().await else {
        return;
    };
    let config = DatabaseConfig {
        url: database.url.clone(),
        ..DatabaseConfig::default()
    };
    let users = Db::open("users", &config, &[])
        .await
        .expect("users storage");
    let catalog = Db::open("catalog", &config, &[])
        .await
        .expect("catalog storage");
    let mut tx = catalog.begin().await.expect("a catalog transaction");
    sqlx::query("CREATE TABLE secrets (id TEXT PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .expect("catalog creates a table in its schema");
    tx.commit().await.expect("commit");

    // Qualified: the schema exists, but the users role has no rights on it.
    let error = sqlx::query("SELECT * FROM catalog.secrets")
        .execute(users.reader())
        .await
        .expect_err("users must not read catalog's schema");
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .unwrap_or_default();
    assert_eq!(code, "42501", "permission denied expected, got {error}");

    // Unqualified: the users role's search path holds only its own schema.
    let error = sqlx::query("SELECT * FROM secrets")
        .execute(users.reader())
        .await
        .expect_err("catalog's table is not visible to users");
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .unwrap_or_default();
    assert_eq!(code, "42P01", "undefined table expected, got {error}");

    users.close().await;
    catalog.close().await;
}
