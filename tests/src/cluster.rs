//! Split topologies with real processes: the same `banyan` binary runs the main process
//! (gateway and registry) and the processes hosting the modules moved out of it.
//!
//! Every process of a cluster runs on 127.0.0.1 with port 0, reads one configuration file
//! written for the test (the test's settings plus its `[topology]`), and shares the test's
//! storage: a SQLite directory (each module has its own file in it) or a PostgreSQL database
//! (each module has its own schema). The main process starts first; the others learn where it
//! is from `topology.registry_url`.
//!
//! NATS is the shared server of `banyan_bus::testing` unless the topology names another (a
//! private server the test may stop); each cluster uses a stream and subject prefix of its
//! own there, deleted when the cluster is dropped.

use std::{path::PathBuf, time::Duration};

use banyan_bus::testing::TestStream;
use serde_json::{Value, json};

use crate::process::BanyanProcess;

/// How long a cluster waits for a condition before it gives up (a hang guard, never a timing).
pub const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
    Nats,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
            Transport::Nats => "nats",
        }
    }
}

/// Which modules leave the main process, and the processes a cluster starts besides main.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `(module, process, transport)` for each module that moves out of main.
    pub placements: Vec<(String, String, Transport)>,
    /// The processes to start, in order; a name given twice starts two instances.
    pub processes: Vec<String>,
    /// The NATS server to use instead of the shared one (say a private one the test stops).
    pub nats_url: Option<String>,
    /// TLS on every listener (public and internal), with certificates made for the test.
    pub tls: bool,
    /// `(process, variable, value)`: the environment of one process only (say its own NATS
    /// credentials).
    pub process_env: Vec<(String, String, String)>,
}

impl Topology {
    /// Payments and notifications in a process each, reached over HTTP with TLS on every
    /// listener: the shop's suites run over TLS in this topology.
    pub fn payments_and_notifications_over_https() -> Self {
        Self {
            placements: vec![
                ("payments".into(), "payments".into(), Transport::Http),
                (
                    "notifications".into(),
                    "notifications".into(),
                    Transport::Http,
                ),
            ],
            processes: vec!["payments".into(), "notifications".into()],
            nats_url: None,
            tls: true,
            process_env: Vec::new(),
        }
    }

    /// Inventory in a process of its own and payments in two, all reached over NATS.
    pub fn inventory_and_two_payments_over_nats() -> Self {
        Self {
            placements: vec![
                ("inventory".into(), "inventory".into(), Transport::Nats),
                ("payments".into(), "payments".into(), Transport::Nats),
            ],
            processes: vec!["inventory".into(), "payments".into(), "payments".into()],
            nats_url: None,
            tls: false,
            process_env: Vec::new(),
        }
    }

    /// Inventory and cart in a process each and payments in two, all reached over gRPC with TLS
    /// on every listener (so HTTP/2 is agreed in ALPN).
    pub fn inventory_cart_and_two_payments_over_grpc() -> Self {
        Self {
            placements: vec![
                ("inventory".into(), "inventory".into(), Transport::Grpc),
                ("cart".into(), "cart".into(), Transport::Grpc),
                ("payments".into(), "payments".into(), Transport::Grpc),
            ],
            processes: vec![
                "inventory".into(),
                "cart".into(),
                "payments".into(),
                "payments".into(),
            ],
            nats_url: None,
            tls: true,
            process_env: Vec::new(),
        }
    }

    /// One module in a process of its own (named after it), reached over `transport`.
    pub fn one(module: &str, transport: Transport) -> Self {
        Self {
            placements: vec![(module.into(), module.into(), transport)],
            processes: vec![module.into()],
            nats_url: None,
            tls: false,
            process_env: Vec::new(),
        }
    }

    /// Whether `process` hosts `module`.
    pub fn hosts(&self, process: &str, module: &str) -> bool {
        self.placements
            .iter()
            .any(|(m, p, _)| m == module && p == process)
    }

    pub fn uses_nats(&self) -> bool {
        self.placements
            .iter()
            .any(|(_, _, t)| *t == Transport::Nats)
    }

    /// The `[topology]` settings, as figment keys and values; `certificates` when TLS.
    fn settings(
        &self,
        nats: Option<&TestStream>,
        certificates: Option<&Certificates>,
    ) -> Vec<(String, Value)> {
        let mut settings: Vec<(String, Value)> = self
            .placements
            .iter()
            .map(|(module, process, transport)| {
                (
                    format!("topology.modules.{module}"),
                    json!({ "process": process, "transport": transport.name() }),
                )
            })
            .collect();
        settings.push(("topology.heartbeat_ms".into(), json!(200)));
        settings.push(("topology.instance_ttl_ms".into(), json!(1000)));
        if let Some(certificates) = certificates {
            let (cert, key, ca) = (
                certificates.cert.display().to_string(),
                certificates.key.display().to_string(),
                certificates.ca.display().to_string(),
            );
            settings.push((
                "server.tls".into(),
                json!({ "cert_file": cert, "key_file": key }),
            ));
            settings.push((
                "topology.tls".into(),
                json!({ "cert_file": cert, "key_file": key, "ca_file": ca }),
            ));
        }
        if let Some(nats) = nats {
            settings.push((
                "topology.nats".into(),
                json!({ "url": nats.config.url, "stream": nats.config.stream,
                         "subject_prefix": nats.config.subject_prefix, "ack_wait_ms": 5_000,
                         "stream_replicas": nats.config.stream_replicas }),
            ));
        }
        settings
    }
}

/// A certificate authority and a certificate it signed for `127.0.0.1` and `localhost`, made
/// with the `openssl` command for one test (PEM files).
#[derive(Debug)]
pub struct Certificates {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Certificates {
    pub fn make(dir: &std::path::Path) -> Self {
        let run = |args: &[&str]| {
            let output = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl command runs (it makes the test's certificates)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=banyan-test-ca",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "node.key",
                "-out",
                "node.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(
            dir.join("node.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("the extensions file");
        run(&[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "node.pem",
            "-days",
            "2",
            "-extfile",
            "node.ext",
        ]);
        Self {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        }
    }

    /// A client that trusts this authority only.
    pub fn client(&self) -> reqwest::Client {
        banyan_bus::http::client_builder()
            .tls_backend_preconfigured(
                banyan_app::tls::client_config(&self.ca).expect("the test's authority"),
            )
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("an HTTPS client")
    }
}

/// The processes of one test and the configuration file they all read.
#[derive(Debug)]
pub struct Cluster {
    pub main: BanyanProcess,
    /// More mains beside `main`, on the same configuration and data: each process registers
    /// with every main.
    pub other_mains: Vec<BanyanProcess>,
    /// The processes started besides main, as `(process name, process)`.
    pub others: Vec<(String, BanyanProcess)>,
    pub topology: Topology,
    config: PathBuf,
    client: reqwest::Client,
    /// The certificates of a cluster with TLS.
    pub certificates: Option<Certificates>,
    // Dropped last: the stream outlives the processes that use it.
    dir: tempfile::TempDir,
    pub nats: Option<TestStream>,
}

impl Cluster {
    /// Writes `figment` with `topology` on top as the configuration file of every process,
    /// starts main, then every other process of the topology, and waits until the registry
    /// lists each moved module's instances as healthy. `None` when NATS is skipped.
    pub async fn start(figment: figment::Figment, topology: Topology) -> Option<Self> {
        let nats = match (&topology.nats_url, topology.uses_nats()) {
            (_, false) => None,
            (Some(url), true) => Some(TestStream::on_server(url.clone()).await),
            (None, true) => Some(TestStream::start().await?),
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certificates = topology.tls.then(|| Certificates::make(dir.path()));
        let mut figment = figment;
        for (key, value) in topology.settings(nats.as_ref(), certificates.as_ref()) {
            figment = banyan_app::config::with(figment, &key, value);
        }
        // Each process's development identity, kept here: the cluster's own keys.
        let figment = banyan_app::config::with(
            figment,
            "server.state_dir",
            dir.path().display().to_string(),
        );
        let config: figment::value::Value = figment.extract().expect("the settings extract");
        let path = dir.path().join("banyan.toml");
        std::fs::write(
            &path,
            toml::to_string(&config).expect("the settings as TOML"),
        )
        .expect("the configuration file");
        let main =
            BanyanProcess::start_with_args(&["--config", path.to_str().expect("UTF-8")], &[]).await;
        let mut cluster = Self {
            main,
            other_mains: Vec::new(),
            others: Vec::new(),
            topology: topology.clone(),
            config: path,
            client: match &certificates {
                Some(certificates) => certificates.client(),
                None => banyan_bus::http::client_builder()
                    .build()
                    .expect("an HTTP client"),
            },
            certificates,
            dir,
            nats,
        };
        for name in &topology.processes {
            cluster.start_process(name).await;
        }
        for (module, _, _) in &topology.placements {
            let count = cluster
                .others
                .iter()
                .filter(|(process, _)| topology.hosts(process, module))
                .count();
            cluster.healthy(module, count).await;
        }
        Some(cluster)
    }

    /// Starts one more `banyan serve --process <name>` pointed at main; returns its index in
    /// `others`.
    pub async fn start_process(&mut self, name: &str) -> usize {
        self.start_process_with(name, &[]).await
    }

    /// Starts `count` more instances of process `name` all at the same moment (as a
    /// scheduler starting a deployment's replicas would), and waits until each serves. A
    /// process that dies on the way fails the test with its log.
    pub async fn start_processes_at_once(&mut self, name: &str, count: usize) {
        let registry = self.registry_url();
        let config = self.config.to_str().expect("UTF-8").to_owned();
        let args = ["--config", config.as_str(), "--process", name];
        let env = [("BANYAN_TOPOLOGY__REGISTRY_URL", registry)];
        let started = futures::future::join_all(
            (0..count).map(|_| BanyanProcess::start_with_args(&args, &env)),
        )
        .await;
        self.others.extend(
            started
                .into_iter()
                .map(|process| (name.to_owned(), process)),
        );
    }

    /// Every main's registry, as `topology.registry_url` lists them.
    fn registry_url(&self) -> String {
        std::iter::once(&self.main)
            .chain(&self.other_mains)
            .map(|main| main.internal_url(""))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts one more main on the same configuration and data; the processes started after it
    /// register with it too. Returns its index among the mains (`main` is 0).
    pub async fn start_another_main(&mut self) -> usize {
        let config = self.config.to_str().expect("UTF-8").to_owned();
        let main = BanyanProcess::start_with_args(&["--config", config.as_str()], &[]).await;
        self.other_mains.push(main);
        self.other_mains.len()
    }

    /// Main number `i` (`main` is 0).
    pub fn main_at(&self, i: usize) -> &BanyanProcess {
        match i {
            0 => &self.main,
            i => &self.other_mains[i - 1],
        }
    }

    /// Makes the next main `main` (after the first was killed), and hands back the old one.
    pub fn promote_other_main(&mut self) -> BanyanProcess {
        let next = self.other_mains.remove(0);
        std::mem::replace(&mut self.main, next)
    }

    /// The configuration file every process of the cluster runs with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// The same, with `extra` in that one instance's environment (say a fault of its own).
    pub async fn start_process_with(&mut self, name: &str, extra: &[(&str, &str)]) -> usize {
        let registry = self.registry_url();
        let process = BanyanProcess::start_with_args(
            &[
                "--config",
                self.config.to_str().expect("UTF-8"),
                "--process",
                name,
            ],
            &self
                .topology
                .process_env
                .iter()
                .filter(|(process, _, _)| process == name)
                .map(|(_, key, value)| (key.as_str(), value.clone()))
                .chain(extra.iter().map(|(key, value)| (*key, (*value).to_owned())))
                .chain([("BANYAN_TOPOLOGY__REGISTRY_URL", registry)])
                .collect::<Vec<_>>(),
        )
        .await;
        self.others.push((name.to_owned(), process));
        self.others.len() - 1
    }

    /// SIGKILLs every process of the cluster, main included, all at once, as a power cut
    /// would; then starts main again on the same configuration and data, and every process
    /// it had besides main, and waits until each moved module's instances are healthy.
    pub async fn kill_every_process_and_restart(&mut self) {
        let names: Vec<String> = self.others.iter().map(|(n, _)| n.clone()).collect();
        let others = std::mem::take(&mut self.others);
        tokio::join!(
            futures::future::join_all(others.into_iter().map(|(_, process)| process.kill())),
            self.main.kill_in_place(),
        );
        self.main = BanyanProcess::start_with_args(
            &["--config", self.config.to_str().expect("UTF-8")],
            &[],
        )
        .await;
        for name in &names {
            self.start_process(name).await;
        }
        for (module, _, _) in &self.topology.placements.clone() {
            let count = names
                .iter()
                .filter(|process| self.topology.hosts(process, module))
                .count();
            self.healthy(module, count).await;
        }
    }

    /// The first running process named `name`.
    pub fn process(&self, name: &str) -> &BanyanProcess {
        self.others
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("no process named {name}"))
    }

    /// Takes the first process named `name` out of the cluster (to kill or stop it).
    pub fn take_process(&mut self, name: &str) -> BanyanProcess {
        let index = self
            .others
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no process named {name}"));
        self.others.remove(index).1
    }

    /// A token that process `process` of this cluster would present (signed with its
    /// development key), to act as it.
    pub fn credential(&self, process: &str) -> String {
        banyan_app::identity::development_credential(self.dir.path(), process)
            .expect("a development credential")
    }

    /// `GET /api/v1/services` on main's internal listener, as main.
    pub async fn services(&self) -> Value {
        self.services_at(0).await
    }

    /// What main number `i` lists.
    pub async fn services_at(&self, i: usize) -> Value {
        let reply = crate::send(
            self.client
                .get(self.main_at(i).internal_url("/api/v1/services"))
                .bearer_auth(self.credential("main")),
        )
        .await;
        assert!(reply.status.is_success(), "services: {}", reply.text);
        reply.body
    }

    /// Waits until `module` has exactly `count` healthy instances; returns them.
    pub async fn healthy(&self, module: &str, count: usize) -> Vec<Value> {
        self.healthy_at(0, module, count).await
    }

    /// [`Cluster::healthy`] as main number `i` sees it.
    pub async fn healthy_at(&self, i: usize, module: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let services = self.services_at(i).await;
            let instances: Vec<Value> = services["modules"][module]["instances"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|i| i["health"] == "healthy")
                .collect();
            if instances.len() == count {
                return instances;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {count} healthy {module} instance(s): {services}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every process gracefully (the others first, main last) and checks each exits
    /// cleanly.
    pub async fn stop(mut self) {
        for (name, process) in self.others.drain(..).rev() {
            let status = process.terminate().await;
            assert!(status.success(), "process {name} exited with {status}");
        }
        for main in self.other_mains.drain(..) {
            let status = main.terminate().await;
            assert!(
                status.success(),
                "a second main process exited with {status}"
            );
        }
        let status = self.main.terminate().await;
        assert!(status.success(), "the main process exited with {status}");
    }
}
