//! The processes of one checkout placement: main and, when payments moves out, a payments
//! process registered with it, each a real process of this very binary
//! (`std::env::current_exe()`, started as `serve`) on a data directory of the placement's own.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::Value;
use tokio::process::{Child, Command};

use super::{progress, unique_suffix};

/// How long start-up steps may take before the run gives up (a hang guard, not a timing).
pub(super) const PATIENCE: Duration = Duration::from_secs(60);
/// The bootstrap admin of every placement's shop.
pub(super) const ADMIN: (&str, &str) = ("bench-admin", "bench-admin-password-1");

/// Where payments runs.
pub(super) enum Placement {
    InProcess,
    Http,
    Grpc,
    Nats { url: String },
}

/// A NATS stream and subject prefix of this placement's own, deleted at the end.
pub(super) struct NatsCorner {
    url: String,
    stream: String,
    prefix: String,
}

/// The processes of one placement, their data directory and configuration.
pub(super) struct Cluster {
    /// Removed (with the data and the logs) when the cluster is dropped.
    pub(super) _dir: tempfile::TempDir,
    pub(super) main: Process,
    pub(super) payments: Option<Process>,
    pub(super) nats: Option<NatsCorner>,
}

impl Cluster {
    pub(super) async fn start(
        exe: &Path,
        placement: &Placement,
        overrides: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("banyan-bench-").tempdir()?;
        std::fs::create_dir(dir.path().join("data"))?;
        let nats = match placement {
            Placement::Nats { url } => {
                let unique = unique_suffix();
                Some(NatsCorner {
                    url: url.clone(),
                    stream: format!("BANYAN_BENCH_CHECKOUT_{unique}"),
                    prefix: format!("banyan_bench_checkout_{unique}"),
                })
            }
            _ => None,
        };
        let transport = match placement {
            Placement::InProcess => None,
            Placement::Http => Some("http"),
            Placement::Grpc => Some("grpc"),
            Placement::Nats { .. } => Some("nats"),
        };
        let mut args = Vec::new();
        if let Some(transport) = transport {
            let config = dir.path().join("topology.toml");
            std::fs::write(&config, topology(transport, nats.as_ref()))?;
            args = vec!["--config".to_owned(), config.display().to_string()];
        }
        let dir_path = dir.path().to_path_buf();
        let mut env = environment(&dir_path);
        env.extend(overrides.iter().cloned());
        let main = Process::start(exe, &dir_path, "main", &args, &env).await?;
        let mut cluster = Self {
            _dir: dir,
            main,
            payments: None,
            nats,
        };
        if transport.is_none() {
            cluster.ready().await?;
            return Ok(cluster);
        }
        env.push((
            "BANYAN_TOPOLOGY__REGISTRY_URL".to_owned(),
            cluster.main.internal_url(""),
        ));
        args.extend(["--process".to_owned(), "payments".to_owned()]);
        cluster.payments = Some(Process::start(exe, &dir_path, "payments", &args, &env).await?);
        cluster.payments_healthy().await?;
        Ok(cluster)
    }

    /// Waits until the monolith answers `GET /ready`.
    pub(super) async fn ready(&self) -> anyhow::Result<()> {
        let client = banyan_bus::http::client_builder().build()?;
        let url = self.main.url("/ready");
        eventually("the main process to be ready", || async {
            let response = client.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await
    }

    /// Waits until the registry lists a healthy payments instance.
    pub(super) async fn payments_healthy(&self) -> anyhow::Result<()> {
        // Asked as main, with its development key in the placement's state directory.
        let credential =
            banyan_app::identity::development_credential(&self._dir.path().join("data"), "main")?;
        let client = banyan_bus::http::client_builder().build()?;
        let url = self.main.internal_url("/api/v1/services");
        eventually("a healthy payments instance in the registry", || async {
            let response = client
                .get(&url)
                .bearer_auth(&credential)
                .send()
                .await
                .ok()?;
            let services: Value = response.json().await.ok()?;
            services["modules"]["payments"]["instances"]
                .as_array()?
                .iter()
                .any(|i| i["health"] == "healthy")
                .then_some(())
        })
        .await
    }

    /// The end of every process's log, for an error message.
    pub(super) fn log_tails(&self) -> String {
        std::iter::once(&self.main)
            .chain(&self.payments)
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(20)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM to every process (payments first, as an operator would), a wait for each, and
    /// the run's NATS stream deleted; the directory goes when `self` is dropped.
    pub(super) async fn stop(self) {
        if let Some(payments) = self.payments {
            payments.terminate().await;
        }
        self.main.terminate().await;
        if let Some(nats) = &self.nats {
            delete_stream(nats).await;
        }
    }
}

/// The configuration file of a split placement: payments moved out over `transport`.
pub(super) fn topology(transport: &str, nats: Option<&NatsCorner>) -> String {
    let mut text = format!(
        "[topology.modules]\npayments = {{ process = \"payments\", transport = \"{transport}\" }}\n"
    );
    if let Some(nats) = nats {
        text.push_str(&format!(
            "\n[topology.nats]\nurl = \"{}\"\nstream = \"{}\"\nsubject_prefix = \"{}\"\n",
            nats.url, nats.stream, nats.prefix
        ));
    }
    text
}

/// The variables every process of a placement gets: its data and the bootstrap admin.
pub(super) fn environment(dir: &Path) -> Vec<(String, String)> {
    [
        (
            "BANYAN_DATABASE__URL",
            format!("sqlite://{}", dir.join("data").display()),
        ),
        // The generated development secret and identities, shared by the placement's processes.
        (
            "BANYAN_SERVER__STATE_DIR",
            dir.join("data").display().to_string(),
        ),
        (
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__USERNAME",
            ADMIN.0.to_owned(),
        ),
        (
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__EMAIL",
            "bench-admin@example.test".to_owned(),
        ),
        (
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__PASSWORD",
            ADMIN.1.to_owned(),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

pub(super) async fn delete_stream(nats: &NatsCorner) {
    let deleted = async {
        let client = banyan_bus::nats::connect(nats.url.as_str()).await?;
        async_nats::jetstream::new(client)
            .delete_stream(&nats.stream)
            .await?;
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), deleted).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => progress(format_args!(
            "could not delete the NATS stream {}: {error}",
            nats.stream
        )),
        Err(_) => progress(format_args!(
            "could not delete the NATS stream {} in time",
            nats.stream
        )),
    }
}

/// One `banyan serve` child, its output in a log file of the cluster's directory.
pub(super) struct Process {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// The internal listener (the bus, the registry), in a split.
    internal_addr: Option<SocketAddr>,
    log: PathBuf,
}

impl Process {
    /// Starts `banyan serve --addr 127.0.0.1:0 <args>` and waits until it serves.
    pub(super) async fn start(
        exe: &Path,
        dir: &Path,
        name: &'static str,
        args: &[String],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(exe);
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
            .args(["--internal-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BANYAN_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut process = Self {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            internal_addr: None,
            log,
        };
        (process.addr, process.internal_addr) = process.serving_addrs().await?;
        Ok(process)
    }

    /// Waits for the "Banyan is serving." line and reads the bound addresses from it.
    async fn serving_addrs(&mut self) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let serving = log
                .lines()
                .filter(|l| l.contains("Banyan is serving."))
                .find_map(|l| serde_json::from_str::<Value>(l).ok());
            if let Some(line) = serving {
                let parse = |key: &str| {
                    line[key]
                        .as_str()
                        .map(|addr| {
                            addr.parse::<SocketAddr>()
                                .with_context(|| format!("{}: a bad {key} {addr:?}", self.name))
                        })
                        .transpose()
                };
                let addr = parse("addr")?
                    .with_context(|| format!("{}: no address in {line}", self.name))?;
                return Ok((addr, parse("internal_addr")?));
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before serving:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not serve within {PATIENCE:?}:\n{}",
                self.name,
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the internal listener; the public one if there is none (a monolith).
    pub(super) fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal_addr.unwrap_or(self.addr))
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM and a wait for the graceful exit; SIGKILL if it does not come.
    async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            // `kill` the program: this crate forbids the unsafe a signal call would need.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => progress(format_args!("{} exited with {status}", self.name)),
            Ok(Err(error)) => progress(format_args!("{}: {error}", self.name)),
            Err(_) => {
                progress(format_args!(
                    "{} did not stop after SIGTERM; killing it",
                    self.name
                ));
                let _ = self.child.kill().await;
            }
        }
    }
}

/// Polls `check` until it gives `Some`; an error naming `what` after [`PATIENCE`].
pub(super) async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if check().await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("gave up waiting for {what} after {PATIENCE:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_topology_is_a_valid_configuration() {
        let nats = NatsCorner {
            url: "nats://127.0.0.1:4222".into(),
            stream: "BANYAN_BENCH_CHECKOUT_X".into(),
            prefix: "banyan_bench_checkout_x".into(),
        };
        for (transport, corner) in [("http", None), ("nats", Some(&nats))] {
            let text = topology(transport, corner);
            let figment = banyan_app::config::layers(&[])
                .expect("the default layers")
                .merge(<figment::providers::Toml as figment::providers::Format>::string(&text));
            let settings = banyan_app::config::load(&figment).expect("a valid configuration");
            let topology = settings.topology;
            assert_eq!(
                topology.transport_of("payments").map(|t| t.as_str()),
                Some(transport)
            );
            if corner.is_some() {
                assert_eq!(topology.nats.stream, nats.stream);
                assert_eq!(topology.nats.subject_prefix, nats.prefix);
            }
        }
    }
}
