//! Every shell block of README.md, run as written (with this build's `banyan` for `cargo run`
//! and `target/debug/banyan`), in a fresh directory holding the repository's `config/`, on the
//! ports the README names: the walkthrough ends in a confirmed order, each split topology
//! starts and its registry lists the moved module, a bad setting prints the line the README
//! shows. A block this test does not know fails it, so the README cannot grow a command that
//! nobody runs; the few it does not run (the test command itself, release builds and benches)
//! are listed with the reason.
//!
//! One test, its steps in order: they share the README's fixed ports.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A fenced `sh` block of the README.
#[derive(Debug)]
struct Block {
    /// Its first line's number in README.md.
    line: usize,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (n, line) in readme.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => {
                current = Some(Block {
                    line: n + 2,
                    text: String::new(),
                })
            }
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Every block, by its first line: `None` when the steps of the test below run it, else why
/// it is not run here.
const PLANS: &[(&str, Option<&str>)] = &[
    (
        "cargo run                  # the whole shop",
        Some(
            "the first lines: `cargo run` is run below (Try it), `cargo test` is the suite this test is part of",
        ),
    ),
    ("cargo run -- seed      #", None),
    ("TOKEN=$(curl", None),
    ("BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__USERNAME", None),
    ("cargo install --path crates/app", None),
    (
        "banyan serve --config config/split-payments-http.toml",
        None,
    ),
    (
        "banyan serve --config config/split-payments-grpc.toml",
        None,
    ),
    (
        "banyan serve --config config/split-payments-nats.toml",
        None,
    ),
    (
        "banyan serve --config config/split-inventory-payments-nats.toml",
        None,
    ),
    ("ADMIN=$(curl", None),
    ("curl -s 127.0.0.1:9464/metrics", None),
    ("promtool check config", None),
    ("BANYAN_TRACES__ENABLED=true cargo run", None),
    ("$ BANYAN_BUS__EVENT_QUEUE=0 cargo run", None),
    ("cargo run -- --database-url postgres://", None),
    ("cargo run -- dead-letters list", None),
    ("cargo run -- data move catalog", None),
    (
        "docker build -f deploy/Dockerfile",
        Some("no Docker engine or cluster here; the deploy test validates every file these use"),
    ),
    (
        "cargo run --release -p banyan-bench --",
        Some("a release build and minutes of load; crates/bench/tests runs the bench's code"),
    ),
    (
        "cargo run --release -- seed && cargo run --release &",
        Some(
            "a release build and minutes of load; crates/bench/tests runs `load` against a real shop",
        ),
    ),
    (
        "cargo run -- seed && (cargo run &) && sleep 5",
        Some("Schemathesis is a Python tool and minutes of fuzzing, run by hand, not by the suite"),
    ),
    (
        "cargo bench -p banyan-bus",
        Some("benchmarks; under `cargo test` each makes a tiny run that checks its cases work"),
    ),
];

/// The block whose first line starts with `first`.
fn block<'b>(blocks: &'b [Block], first: &str) -> &'b Block {
    blocks
        .iter()
        .find(|b| b.text.starts_with(first))
        .unwrap_or_else(|| panic!("README.md has no sh block starting with {first:?}"))
}

/// The block as this build runs it: `cargo run` and the installed `banyan` are this build's
/// binary, and `cargo install` is skipped (it would build the release profile again).
fn as_run(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("cargo install --path crates/app") {
                return "true".to_owned();
            }
            let line = match line.strip_prefix("banyan ") {
                Some(rest) => format!("\"$BANYAN\" {rest}"),
                None => line.to_owned(),
            };
            line.replace("cargo run -- ", "\"$BANYAN\" ")
                .replace("cargo run ", "\"$BANYAN\" ")
                .replace("cargo run", "\"$BANYAN\"")
        })
        .map(|line| line + "\n")
        .collect()
}

/// A directory like a fresh clone's for running the README: the repository's `config/`.
struct Shop {
    dir: tempfile::TempDir,
    banyan: PathBuf,
}

impl Shop {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::os::unix::fs::symlink(repo.join("config"), dir.path().join("config")).unwrap();
        std::os::unix::fs::symlink(repo.join("deploy"), dir.path().join("deploy")).unwrap();
        Self {
            dir,
            banyan: banyan_e2e::process::binary(),
        }
    }

    fn bash(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(self.dir.path())
            .env("BANYAN", &self.banyan)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `script` to its end; its output, which must be a success.
    fn run(&self, script: &str) -> String {
        println!("running: {}", script.lines().next().unwrap_or_default());
        let output = self.bash(script).output().unwrap();
        assert!(
            output.status.success(),
            "{script}\nfailed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn output(&self, script: &str) -> Output {
        self.bash(script).output().unwrap()
    }

    /// Starts every line of `block` (with `prelude` before each) as a server and waits until
    /// each answers on the port it names (8080 without one). The servers stop when the
    /// returned guard is dropped.
    async fn serve(&self, prelude: &str, block: &str) -> Servers {
        let mut servers = Servers(Vec::new());
        // A line may continue on the next (`\` at its end).
        let joined = block.replace("\\\n", " ");
        for line in joined.lines().filter(|l| !l.trim().is_empty()) {
            let command = line.split(" #").next().unwrap_or(line).trim().to_owned();
            let port = command
                .split_once("--addr 127.0.0.1:")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("8080")
                .to_owned();
            servers.start(self.bash(&format!("{prelude}\n{command}")));
            wait_for(&format!("http://127.0.0.1:{port}/health"), &command).await;
            println!("serving: {command}");
        }
        servers
    }
}

/// Servers started from the README, each in a process group of its own (the bash that runs
/// its line, and the server), stopped (SIGTERM to the group, then waited for) when dropped.
struct Servers(Vec<Child>);

impl Servers {
    fn start(&mut self, mut command: Command) {
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.0.push(child);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

async fn wait_for(url: &str, what: &str) {
    let client = banyan_bus::http::client_builder().build().unwrap();
    let started = Instant::now();
    loop {
        if let Ok(answer) = client.get(url).send().await
            && answer.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not answer at {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a service the README's commands need runs here; in CI it must.
fn reachable(what: &str, addr: &str) -> bool {
    let up = std::net::TcpStream::connect(addr).is_ok();
    assert!(
        up || std::env::var_os("CI").is_none(),
        "{what} is needed in CI at {addr}"
    );
    if !up {
        eprintln!("{what} is not running at {addr}: skipping its README commands");
    }
    up
}

/// The registry's listing (block `ADMIN=$(curl ...`) until every module in `moved` has a
/// healthy instance there.
async fn registry_lists(shop: &Shop, listing: &str, moved: &[&str]) {
    let started = Instant::now();
    loop {
        let output = shop.run(listing);
        let modules: serde_json::Value = serde_json::from_str(&output).unwrap();
        if moved.iter().all(|m| {
            modules[m]["instances"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["health"] == "healthy"))
        }) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the registry does not list {moved:?} as healthy: {output}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let blocks = blocks(&readme);
    // Every block is accounted for.
    for block in &blocks {
        let planned = PLANS
            .iter()
            .filter(|(first, _)| block.text.starts_with(first))
            .count();
        assert_eq!(
            planned, 1,
            "README.md line {}: a shell block this test does not run (add it to PLANS):\n{}",
            block.line, block.text
        );
    }
    // Each plan names a block that exists; the steps below follow the README's order of use.
    for (first, plan) in PLANS {
        block(&blocks, first);
        if let Some(reason) = plan {
            println!("not run: {first:?}: {reason}");
        }
    }
    if std::net::TcpStream::connect("127.0.0.1:8080").is_ok() {
        panic!("something already listens on 127.0.0.1:8080, the README's port: stop it");
    }
    let text = |first: &str| as_run(&block(&blocks, first).text);

    // Try it: seed, serve, the walkthrough with curl and jq, the metrics, the dead letters.
    let shop = Shop::new();
    let try_it = text("cargo run -- seed      #");
    let (seed, serve) = try_it.split_once('\n').unwrap();
    let seeded = shop.run(seed);
    assert!(seeded.contains("Customer: alice"), "{seeded}");
    {
        let _shop = shop.serve("", serve).await;
        let walked = shop.run(&text("TOKEN=$(curl"));
        assert!(walked.contains("\"status\": \"confirmed\""), "{walked}");
        let metrics = shop.run(&text("curl -s 127.0.0.1:9464/metrics"));
        assert!(metrics.contains("banyan_bus_requests_total{"), "{metrics}");
        let letters = shop.run(&text("cargo run -- dead-letters list"));
        assert_eq!(letters.trim(), "[]");
    }
    // Beyond one machine: the catalog's data moved, with the shop stopped.
    let moved = shop.run(&text("cargo run -- data move catalog"));
    assert!(moved.contains("Verified."), "{moved}");
    assert!(
        moved.contains("BANYAN_DATABASE__MODULES__CATALOG__URL=sqlite://data-catalog"),
        "{moved}"
    );

    // A bad setting: the very line the README shows, and exit code 2.
    let shown = &block(&blocks, "$ BANYAN_BUS__EVENT_QUEUE=0 cargo run").text;
    let (command, printed) = shown.split_once('\n').unwrap();
    let output = shop.output(&as_run(&format!("{}\n", command.trim_start_matches("$ "))));
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        printed.trim()
    );

    // The first admin from the environment.
    {
        let shop = Shop::new();
        let _shop = shop
            .serve(
                "",
                &text("BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__USERNAME"),
            )
            .await;
        let login = shop.run(
            "curl -sf localhost:8080/api/v1/users/login -H 'content-type: application/json' \
             -d '{\"username\":\"admin\",\"password\":\"a long secret\"}' | jq -r .role",
        );
        assert_eq!(login.trim(), "admin");
    }

    // Traces on, with no collector listening: the shop serves all the same.
    {
        let shop = Shop::new();
        let _shop = shop
            .serve("", &text("BANYAN_TRACES__ENABLED=true cargo run"))
            .await;
    }

    // PostgreSQL.
    if reachable("PostgreSQL", "127.0.0.1:5432") {
        let shop = Shop::new();
        let _shop = shop
            .serve("", &text("cargo run -- --database-url postgres://"))
            .await;
        let ready = shop.run("curl -s localhost:8080/ready | jq -r .status");
        assert_eq!(ready.trim(), "ready");
    }

    // Each split topology: seed, every process, and the registry's listing.
    let listing = text("ADMIN=$(curl");
    let nats = reachable("NATS", "127.0.0.1:4222");
    for (first, moved, needs_nats) in [
        (
            "banyan serve --config config/split-payments-http.toml",
            &["payments"][..],
            false,
        ),
        (
            "banyan serve --config config/split-payments-grpc.toml",
            &["payments"],
            false,
        ),
        (
            "banyan serve --config config/split-payments-nats.toml",
            &["payments"],
            true,
        ),
        (
            "banyan serve --config config/split-inventory-payments-nats.toml",
            &["inventory", "payments"],
            true,
        ),
    ] {
        if needs_nats && !nats {
            continue;
        }
        let shop = Shop::new();
        shop.run(&text("cargo install --path crates/app"));
        let _processes = shop.serve("", &text(first)).await;
        registry_lists(&shop, &listing, moved).await;
    }

    // Prometheus's configuration, and Prometheus itself on it.
    if which("promtool") {
        let prometheus = text("promtool check config");
        let (check, serve) = prometheus.split_once('\n').unwrap();
        let shop = Shop::new();
        let checked = shop.output(check);
        assert!(
            checked.status.success(),
            "{}",
            String::from_utf8_lossy(&checked.stderr)
        );
        if which("prometheus") {
            let mut servers = Servers(Vec::new());
            servers.start(shop.bash(serve));
            wait_for("http://127.0.0.1:9090/-/ready", serve).await;
        }
    } else {
        assert!(std::env::var_os("CI").is_none(), "promtool is needed in CI");
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
