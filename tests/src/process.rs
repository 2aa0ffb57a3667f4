//! Real `banyan` processes, for the tests that must kill one.
//!
//! The binary is the one `cargo test --workspace` builds for the `banyan-app` package, found
//! next to the test executable (`target/<profile>/banyan`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::Notify,
};

/// The `banyan` executable of this build.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BANYAN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> -> target/<profile>/banyan
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(format!("banyan{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        binary.display()
    );
    binary
}

/// A running `banyan` process with its stderr (the JSON logs) captured line by line.
#[derive(Debug)]
pub struct BanyanProcess {
    /// `main`, or the name given with `--process`.
    pub name: String,
    child: Child,
    pub addr: std::net::SocketAddr,
    /// Its internal listener (the bus, the registry), in a split.
    pub internal_addr: Option<std::net::SocketAddr>,
    /// Where it serves `/metrics`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Whether the public listener, and the internal one, speak TLS.
    pub tls: bool,
    pub internal_tls: bool,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: Arc<Notify>,
}

impl BanyanProcess {
    /// Starts `banyan serve --addr 127.0.0.1:0` with `env`, and waits until it serves.
    pub async fn start(env: &[(&str, String)]) -> Self {
        Self::start_with_args(&[], env).await
    }

    /// Starts `banyan serve --addr 127.0.0.1:0 <args>` with `env` (say `--config FILE
    /// --process payments`), and waits until it serves.
    pub async fn start_with_args(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = Self::command(args);
        // Set explicitly, so that no test process generates one into the working directory.
        command.env("BANYAN_AUTH__JWT_SECRET", crate::TEST_JWT_SECRET);
        Self::launch(command, args, env).await
    }

    /// Starts `banyan serve --addr 127.0.0.1:0 <args>` in `dir` with only `env` configured,
    /// as a fresh `cargo run` there would: no secret set.
    pub async fn start_fresh_in(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = Self::command(args);
        command.current_dir(dir);
        Self::launch(command, args, env).await
    }

    fn command(args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
            // In a split, the bus and the registry listen there (a free port too).
            .args(["--internal-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env("BANYAN_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn launch(mut command: Command, args: &[&str], env: &[(&str, String)]) -> Self {
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("banyan starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let new_line = Arc::new(Notify::new());
        {
            let (lines, new_line) = (lines.clone(), new_line.clone());
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("[banyan] {line}");
                    }
                    lines.lock().expect("log lines").push(line);
                    new_line.notify_waiters();
                }
                new_line.notify_waiters();
            });
        }
        let name = args
            .iter()
            .position(|a| *a == "--process")
            .and_then(|i| args.get(i + 1))
            .map_or("main", |n| n)
            .to_owned();
        let mut process = Self {
            name,
            child,
            addr: "127.0.0.1:0".parse().expect("an address"),
            internal_addr: None,
            metrics_addr: None,
            tls: false,
            internal_tls: false,
            lines,
            new_line,
        };
        let serving = process.wait_for_line("Banyan is serving.").await;
        let log: serde_json::Value = serde_json::from_str(&serving).expect("a JSON log line");
        process.addr = log["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("the serving line names the address");
        process.internal_addr = log["internal_addr"].as_str().and_then(|a| a.parse().ok());
        process.metrics_addr = log["metrics_addr"].as_str().and_then(|a| a.parse().ok());
        process.tls = log["tls"] == true;
        process.internal_tls = log["internal_tls"] == true;
        process
    }

    /// The process's id, to read what the kernel says of it (`/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("a running process")
    }

    /// Waits for a stderr line containing `needle` and returns it. Panics if the process
    /// exits first or nothing comes within 60 s.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.new_line.notified();
            if let Some(line) = self
                .lines
                .lock()
                .expect("log lines")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "banyan exited ({status}) before logging {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "banyan did not log {needle:?}:\n{}",
                self.output()
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn output(&self) -> String {
        self.lines.lock().expect("log lines").join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// A URL on the internal listener (a process of a split has one).
    pub fn internal_url(&self, path: &str) -> String {
        let addr = self
            .internal_addr
            .expect("a process of a split has an internal listener");
        let scheme = if self.internal_tls { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// The process's `/metrics` URL.
    pub fn metrics_url(&self) -> String {
        let addr = self.metrics_addr.expect("the process serves /metrics");
        format!("http://{addr}/metrics")
    }

    /// Every stderr line so far that parses as a JSON log line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .expect("log lines")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// SIGKILL: no cleanup, no drain, exactly like a crash.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL delivered");
    }

    /// SIGKILL, and wait until it is gone (its files and ports released).
    pub async fn kill_in_place(&mut self) {
        self.child.kill().await.expect("SIGKILL delivered");
    }

    /// SIGTERM, then wait for the graceful exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("a running process");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("banyan exits after SIGTERM")
            .expect("an exit status")
    }
}

impl Drop for BanyanProcess {
    /// A failed test shows the end of the process's log: often the only trace of what the
    /// process did.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let output = self.output();
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- the last lines of banyan process {} ---\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }
}
