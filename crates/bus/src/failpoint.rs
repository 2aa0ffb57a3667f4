//! Failpoints: named places where a test can stop a real process, to kill it there.
//!
//! `BANYAN_FAILPOINTS=outbox.after_commit` makes the process print `FAILPOINT <name> reached`
//! on stderr and then wait forever at that place, so a test can SIGKILL it at exactly that
//! point. Without the variable a failpoint costs one load of a cached flag.

use std::sync::OnceLock;

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("BANYAN_FAILPOINTS")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    })
}

/// Waits forever if the failpoint `name` is armed; returns at once otherwise.
pub async fn hit(name: &str) {
    if armed().iter().any(|armed| armed == name) {
        tracing::warn!(failpoint = name, "Failpoint reached; waiting to be killed.");
        eprintln!("FAILPOINT {name} reached");
        std::future::pending::<()>().await;
    }
}
