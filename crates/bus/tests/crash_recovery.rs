//! A real crash: a process is killed with SIGKILL after its state change committed and before
//! the event went out; after a restart the event is delivered and each subscriber applies it
//! exactly once.
//!
//! The test re-runs its own binary as the child: with `BANYAN_CRASH_CHILD=<data dir>` (and the
//! failpoint `outbox.after_commit` armed) the same test function plays the process that
//! crashes, and hangs in `commit` right after the commit until the parent kills it.

#![cfg(unix)]

mod support;

use std::{os::unix::process::ExitStatusExt, path::Path, process::Stdio};

use banyan_bus::{Bus, BusConfig, Context, Event, Message, Outbox};
use banyan_db::Db;
use serde::{Deserialize, Serialize};
use support::{PATIENCE, applied, apply_once, open_module, rows, sqlite_config, wait_until};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// The name of the test below, which the child runs with `--exact`.
const TEST_NAME: &str = "a_process_killed_after_its_commit_and_before_publishing_delivers_the_event_exactly_once_after_restart";
const CHILD_ENV: &str = "BANYAN_CRASH_CHILD";
const ORDER_ENV: &str = "BANYAN_CRASH_ORDER";
const FAILPOINT_LINE: &str = "FAILPOINT outbox.after_commit reached";
const SUBSCRIBERS: [&str; 2] = ["billing", "shipping"];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: Uuid,
}

impl Message for OrderPlaced {
    const SUBJECT: &str = "orders.order_placed.v1";
}

impl Event for OrderPlaced {
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

struct Modules {
    orders: Db,
    subscribers: Vec<(&'static str, Db)>,
}

async fn open_modules(dir: &Path) -> Modules {
    let config = sqlite_config(dir);
    let mut subscribers = Vec::new();
    for module in SUBSCRIBERS {
        subscribers.push((module, open_module(&config, module).await));
    }
    Modules {
        orders: open_module(&config, "orders").await,
        subscribers,
    }
}

/// Wires the modules on `bus` as the application would at start: every module's relay, and
/// each subscriber applying `OrderPlaced` once (inbox) with a non-idempotent effect.
fn wire(bus: &Bus, modules: &Modules) -> Outbox {
    let orders = Outbox::start(bus, modules.orders.clone());
    for (module, db) in modules.subscribers.iter().cloned() {
        let outbox = Outbox::start(bus, db);
        bus.subscribe::<OrderPlaced, _, _>(module, move |delivered| {
            let outbox = outbox.clone();
            async move { apply_once(&outbox, &delivered).await }
        });
    }
    orders
}

/// The process that crashes: places an order and hangs at the failpoint right after the commit.
async fn crashing_child(dir: &Path, order_id: Uuid) {
    let modules = open_modules(dir).await;
    let bus = Bus::new(BusConfig {
        relay_lease_ms: 200,
        // The child's relay must not send the event before it is killed: its first pass would
        // come an hour from now. (The lease is what the restarted relay goes by.)
        relay_interval_ms: 3_600_000,
        ..BusConfig::default()
    });
    let orders = wire(&bus, &modules);
    let mut uow = orders.begin().await.expect("beginning");
    sqlx::query("INSERT INTO items (id, note) VALUES ($1, 'placed')")
        .bind(order_id.to_string())
        .execute(&mut *uow)
        .await
        .expect("placing the order");
    uow.emit(&Context::root(), OrderPlaced { order_id })
        .await
        .expect("recording the event");
    uow.commit().await.expect("committing");
    panic!("the failpoint outbox.after_commit is not armed: commit returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_after_its_commit_and_before_publishing_delivers_the_event_exactly_once_after_restart()
 {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let order_id = std::env::var(ORDER_ENV)
            .expect("the parent names the order")
            .parse()
            .expect("an order id");
        crashing_child(Path::new(&dir), order_id).await;
        return;
    }
    assert!(
        std::env::var_os("BANYAN_FAILPOINTS").is_none(),
        "BANYAN_FAILPOINTS is set: the parent process would hang at the failpoint too"
    );

    // ---- The child: it commits, reaches the failpoint and is killed there.
    let dir = TempDir::new().expect("a temporary data directory");
    let order_id = Uuid::now_v7();
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("this binary"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .env(ORDER_ENV, order_id.to_string())
        .env("BANYAN_FAILPOINTS", "outbox.after_commit")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the child");
    let stderr = child.stderr.take().expect("the child's stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut output = Vec::new();
    let reached = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("reading the child's stderr") {
            if line.contains(FAILPOINT_LINE) {
                return true;
            }
            output.push(line);
        }
        false
    })
    .await;
    match reached {
        Ok(true) => {}
        Ok(false) => panic!(
            "the child ended without reaching the failpoint; its stderr:\n{}",
            output.join("\n")
        ),
        Err(_) => panic!(
            "the child did not reach the failpoint within {PATIENCE:?}; its stderr:\n{}",
            output.join("\n")
        ),
    }
    child.kill().await.expect("killing the child"); // SIGKILL
    let status = child.wait().await.expect("reaping the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child was not killed by SIGKILL: {status}"
    );

    // ---- What the crash left: the state change and its event, committed; nothing applied.
    let modules = open_modules(dir.path()).await;
    let placed: Option<String> = sqlx::query_scalar("SELECT note FROM items WHERE id = $1")
        .bind(order_id.to_string())
        .fetch_optional(modules.orders.reader())
        .await
        .expect("reading the order");
    assert_eq!(
        placed.as_deref(),
        Some("placed"),
        "the state change was not committed"
    );
    assert_eq!(
        rows(&modules.orders, "outbox").await,
        1,
        "the event was not committed"
    );
    for (module, db) in &modules.subscribers {
        assert_eq!(
            applied(db).await,
            0,
            "`{module}` applied the event before the crash"
        );
        assert_eq!(rows(db, "inbox").await, 0);
    }

    // ---- The restart: the relay finds the event and every subscriber applies it once.
    let bus = Bus::new(BusConfig {
        relay_lease_ms: 200,
        relay_interval_ms: 20,
        ..BusConfig::default()
    });
    wire(&bus, &modules);
    for (module, db) in &modules.subscribers {
        wait_until(&format!("`{module}` applied the event"), async || {
            applied(db).await >= 1
        })
        .await;
    }
    wait_until("the orders outbox is empty", async || {
        rows(&modules.orders, "outbox").await == 0
    })
    .await;
    // Stop everything (redeliveries in flight included) before the final count.
    assert!(bus.shutdown().await, "the bus did not drain");
    for (module, db) in &modules.subscribers {
        assert_eq!(
            applied(db).await,
            1,
            "`{module}` applied the event more than once"
        );
        assert_eq!(rows(db, "inbox").await, 1);
    }
    assert_eq!(rows(&modules.orders, "outbox").await, 0);
    assert_eq!(rows(&modules.orders, "items").await, 1);
}
