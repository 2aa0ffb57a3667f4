#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

//! `banyan-bench load` as an operator runs it: against a real shop (this binary started as
//! `serve` on a fresh data directory), briefly, in both drives; every kind of the seed's mix is
//! sent and answered without an error, and the figures and the chart are written. Never an
//! absolute time.

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::Value;

const KINDS: [&str; 9] = [
    "users",
    "product",
    "category",
    "cart_add",
    "cart_get",
    "order",
    "payment",
    "stock",
    "notifications",
];
const ADMIN_PASSWORD: &str = "load-test-admin-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_shop(dir: &Path) -> (tokio::process::Child, String) {
    let port = free_port();
    let data = dir.join("data");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_banyan-bench"));
    command
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BANYAN_") {
            command.env_remove(key);
        }
    }
    command
        .env(
            "BANYAN_DATABASE__URL",
            format!("sqlite://{}", data.display()),
        )
        .env("BANYAN_SERVER__STATE_DIR", data.display().to_string())
        .env("BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__USERNAME", "admin")
        .env(
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__EMAIL",
            "admin@example.test",
        )
        .env(
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__PASSWORD",
            ADMIN_PASSWORD,
        );
    let child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = banyan_bus::http::client_builder().build().unwrap();
    for _ in 0..300 {
        if let Ok(reply) = client.get(format!("{base}/ready")).send().await
            && reply.status().is_success()
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the shop did not get ready within 30 s");
}

async fn load(base: &str, out: &Path, drive: &[&str]) -> Value {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_banyan-bench"))
        .args([
            "load",
            "--url",
            base,
            "--seconds",
            "2",
            "--warmup-seconds",
            "0",
        ])
        .args(["--customers", "3", "--products", "4"])
        .args(drive)
        .args(["--out", &out.display().to_string()])
        .env("BANYAN_LOAD_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the load ends within five minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "banyan-bench load failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for kind in KINDS {
        assert!(
            stdout.contains(kind),
            "the table has no row `{kind}`:\n{stdout}"
        );
    }
    assert!(out.join("load.svg").exists(), "no chart");
    serde_json::from_str(&std::fs::read_to_string(out.join("load.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_sends_the_seed_mix_open_and_closed_loop_and_every_kind_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_shop, base) = start_shop(dir.path()).await;
    for (name, drive) in [
        ("open", &["--rate", "200"][..]),
        ("closed", &["--connections", "4"][..]),
    ] {
        let out = dir.path().join(name);
        let document = load(&base, &out, drive).await;
        let rows = document["kinds"].as_array().unwrap();
        assert_eq!(rows.len(), KINDS.len(), "{document}");
        for row in rows {
            let kind = row["kind"].as_str().unwrap();
            assert!(
                row["requests"].as_u64().unwrap() > 0,
                "{name}: no {kind} request: {row}"
            );
            assert_eq!(
                row["errors"].as_u64(),
                Some(0),
                "{name}: {kind} failed: {row}"
            );
            let p50 = row["p50_ms"].as_f64().unwrap();
            let p99 = row["p99_ms"].as_f64().unwrap();
            let p999 = row["p999_ms"].as_f64().unwrap();
            assert!(
                0.0 < p50 && p50 <= p99 && p99 <= p999,
                "{name}: {kind}: {row}"
            );
        }
        let total = &document["total"];
        let sent: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        assert_eq!(total["requests"].as_u64(), Some(sent));
        if name == "open" {
            // Open loop at 200/s for 2 s: the schedule, not the answers, sets the count.
            assert!(
                (380..=420).contains(&sent),
                "open loop sent {sent}, expected ~400"
            );
            // The weights hold: the catalog's reads are the biggest kind, payments the smallest.
            let count = |kind: &str| {
                rows.iter()
                    .find(|r| r["kind"] == kind)
                    .and_then(|r| r["requests"].as_u64())
                    .unwrap()
            };
            assert!(count("product") > count("notifications"));
            assert!(count("notifications") > count("payment"));
        }
    }
}
