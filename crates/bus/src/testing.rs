//! NATS for tests (behind the `test-util` feature): a stream of the test's own on the shared
//! server, and a private server, or a private three-node cluster, the test may kill and start
//! again.
//!
//! The shared server is `BANYAN_TEST_NATS_URL` (default: the three-node cluster of
//! `deploy/nats/cluster.sh`, `nats://127.0.0.1:4222,…:4223,…:4224`; one server on :4222 does
//! too), with JetStream; on a cluster a test's stream is kept on three nodes. The private one
//! runs `BANYAN_TEST_NATS_SERVER` (default `nats-server` on the `PATH`). When NATS cannot be had the test fails, unless `BANYAN_SKIP_NATS=1` is set, which
//! is never honoured when `CI` is.

use std::time::Duration;

use uuid::Uuid;

use crate::nats::NatsConfig;

/// How long a helper waits for a server before it gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// The shared NATS server's URL: every node of the local cluster.
pub fn nats_url() -> String {
    std::env::var("BANYAN_TEST_NATS_URL").unwrap_or_else(|_| {
        "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224".to_owned()
    })
}

/// The skip policy: `None` (skip) when `BANYAN_SKIP_NATS=1` outside CI; otherwise a panic
/// that says what is missing.
pub fn nats_unreachable<T>(error: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "NATS is unreachable: {error}. CI must run the NATS tests."
    );
    assert!(
        std::env::var("BANYAN_SKIP_NATS").as_deref() == Ok("1"),
        "NATS (BANYAN_TEST_NATS_URL, default nats://127.0.0.1:4222, with JetStream) is \
         unreachable: {error}. Start it, point BANYAN_TEST_NATS_URL at a server, or set \
         BANYAN_SKIP_NATS=1 to skip the NATS tests."
    );
    println!("SKIPPED: NATS unreachable ({error})");
    None
}

/// The shared server's URL once a connection to it succeeded; `None` when it cannot be reached
/// and skipping is allowed (see [`nats_unreachable`]).
pub async fn reachable_nats_url() -> Option<String> {
    reachable_nats().await.map(|(url, _)| url)
}

/// The shared server's URL, and whether it is a cluster, once a connection succeeded.
async fn reachable_nats() -> Option<(String, bool)> {
    let url = nats_url();
    let addresses: Vec<&str> = url.split(',').map(str::trim).collect();
    // A plain connection, without retries, tells "unreachable" apart quickly.
    let probe = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&addresses[..]);
    match tokio::time::timeout(Duration::from_secs(10), probe).await {
        Ok(Ok(client)) => {
            let clustered = client.server_info().cluster.is_some();
            drop(client);
            Some((url, clustered))
        }
        Ok(Err(error)) => nats_unreachable(&format!("{url}: {error}")),
        Err(_) => nats_unreachable(&format!("{url}: no connection within 10 s")),
    }
}

/// A test's corner of a NATS server: a subject prefix and a stream of its own, deleted when
/// this is dropped.
#[derive(Debug)]
pub struct TestStream {
    pub config: NatsConfig,
}

impl TestStream {
    /// A corner of the shared server, its stream kept on three nodes when the server is a
    /// cluster; `None` when it cannot be reached and skipping is allowed.
    pub async fn start() -> Option<Self> {
        let (url, clustered) = reachable_nats().await?;
        Some(Self::on(url).kept_on_three_nodes_if(clustered))
    }

    /// A fresh prefix and stream on the server (or cluster) at `url`, which a test started
    /// itself, its stream kept on three nodes when it is a cluster.
    pub async fn on_server(url: String) -> Self {
        let clustered = match crate::nats::connect(&url).await {
            Ok(client) => client.server_info().cluster.is_some(),
            Err(_) => false,
        };
        Self::on(url).kept_on_three_nodes_if(clustered)
    }

    fn kept_on_three_nodes_if(mut self, clustered: bool) -> Self {
        if clustered {
            self.config.stream_replicas = 3;
        }
        self
    }

    /// A fresh prefix and stream on the server at `url`.
    pub fn on(url: String) -> Self {
        let unique = Uuid::new_v4().simple();
        Self {
            config: NatsConfig {
                url,
                stream: format!("BANYAN_TEST_{unique}"),
                subject_prefix: format!("banyan_test_{unique}"),
                ..NatsConfig::default()
            },
        }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, stream) = (self.config.url.clone(), self.config.stream.clone());
        banyan_db::testing::block_on_detached(async move {
            let connect = crate::nats::connect(url.as_str());
            if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(10), connect).await {
                // Absent when the test never created it.
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&stream)
                    .await;
            }
        });
    }
}

/// A NATS server of the test's own, with JetStream on a temporary store, which the test may
/// kill and start again on the same port and store.
#[derive(Debug)]
pub struct PrivateNats {
    binary: String,
    port: u16,
    store: tempfile::TempDir,
    /// A configuration file of the test's (say its users and their permissions).
    config: Option<std::path::PathBuf>,
    /// Flags after the others (a cluster node's name, cluster port and routes).
    extra_args: Vec<String>,
    child: Option<tokio::process::Child>,
}

impl PrivateNats {
    /// Starts one; `None` when it cannot be started and skipping is allowed.
    pub async fn start() -> Option<Self> {
        Self::start_with("").await
    }

    /// Starts one that also reads `config` (nats-server's configuration syntax; empty for
    /// none); `None` when it cannot be started and skipping is allowed.
    pub async fn start_with(config: &str) -> Option<Self> {
        let mut server = Self::new(free_port(), Vec::new());
        if !config.is_empty() {
            let path = server.store.path().join("nats-server.conf");
            std::fs::write(&path, config).expect("the server's configuration");
            server.config = Some(path);
        }
        match server.run().await {
            Ok(()) => Some(server),
            Err(error) => nats_unreachable(&error),
        }
    }

    /// Not started yet: a server on `port` with `extra_args`.
    fn new(port: u16, extra_args: Vec<String>) -> Self {
        Self {
            binary: std::env::var("BANYAN_TEST_NATS_SERVER")
                .unwrap_or_else(|_| "nats-server".to_owned()),
            port,
            store: tempfile::TempDir::new().expect("a temporary JetStream directory"),
            config: None,
            extra_args,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The URL with a user's name and password.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    pub async fn run(&mut self) -> Result<(), String> {
        let mut command = tokio::process::Command::new(&self.binary);
        if let Some(config) = &self.config {
            // Flags given after the file win over it.
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra_args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start `{}`: {error}", self.binary))?;
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            if started.elapsed() > PATIENCE {
                return Err(format!("`{}` did not listen on {address}", self.binary));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Kills the server abruptly (SIGKILL).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killing nats-server");
        }
    }
}

/// A free port on loopback (free when asked: the server binding it next is all but alone).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A JetStream cluster of the test's own on loopback: nodes with a client port, a cluster port
/// and a store each, routed to one another. A node may be killed and started again.
#[derive(Debug)]
pub struct PrivateNatsCluster {
    nodes: Vec<PrivateNats>,
}

impl PrivateNatsCluster {
    /// Starts `size` nodes and waits until JetStream answers (its meta leader is elected);
    /// `None` when they cannot be started and skipping is allowed.
    pub async fn start(size: usize) -> Option<Self> {
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(size);
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let args = [
                "--server_name",
                &format!("node{i}"),
                "--cluster_name",
                "banyan-test",
                "--cluster",
                &format!("nats://127.0.0.1:{cluster_port}"),
                "--routes",
                &routes,
            ];
            let mut node = PrivateNats::new(free_port(), args.map(str::to_owned).to_vec());
            if let Err(error) = node.run().await {
                return nats_unreachable(&error);
            }
            nodes.push(node);
        }
        let cluster = Self { nodes };
        match cluster.jetstream_ready().await {
            Ok(()) => Some(cluster),
            Err(error) => nats_unreachable(&error),
        }
    }

    /// Every node's URL, comma-separated: the seeds a client is given.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(PrivateNats::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` abruptly (SIGKILL).
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].kill().await;
    }

    /// Starts node `i` again, on its port and store.
    pub async fn run(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i].run().await
    }

    /// Waits until the cluster's JetStream answers an account query.
    async fn jetstream_ready(&self) -> Result<(), String> {
        let url = self.url();
        let started = tokio::time::Instant::now();
        let client = crate::nats::connect(url.as_str())
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let jetstream = async_nats::jetstream::new(client);
        loop {
            match jetstream.query_account().await {
                Ok(_) => return Ok(()),
                Err(error) if started.elapsed() > PATIENCE => {
                    return Err(format!(
                        "JetStream of the cluster {url} is not ready: {error}"
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
