//! The topology: which process hosts each module, and which transport reaches it.
//!
//! `[topology]` in the configuration. A module not listed under `topology.modules` runs in the
//! main process. Every process runs the same binary with the same configuration and
//! `banyan serve --process <name>` (`topology.process`, default `main`) picks its share:
//!
//! ```toml
//! [topology.modules]
//! payments = { process = "payments", transport = "http" }   # or "grpc", or "nats"
//!
//! ```
//!
//! Each process proves which one it is with a key of its own (`[topology.identity]`, see
//! [`crate::identity`]).
//!
//! With no module placed outside `main` the topology is *inactive*: the process is exactly the
//! monolith (no registry, no gateway, no transports).

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use banyan_bus::{http::HttpTransportConfig, nats::NatsConfig};
use serde::{Deserialize, Serialize};

/// The process that hosts every module not placed elsewhere, serves the gateway and keeps the
/// registry.
pub const MAIN: &str = "main";

/// The main process's internal listener unless `topology.internal_addr` says otherwise.
pub const MAIN_INTERNAL_ADDR: &str = "127.0.0.1:9080";

/// How the modules of a process are reached from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// JSON `POST`s to the hosting process's `/bus/v1/...` endpoints.
    Http,
    /// Unary gRPC calls (`banyan.bus.v1.Bus`) over HTTP/2, on the same internal listener.
    Grpc,
    /// Core NATS requests and a JetStream stream for events.
    Nats,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Http => "http",
            TransportKind::Grpc => "grpc",
            TransportKind::Nats => "nats",
        }
    }
}

/// `[topology.health]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often main checks each instance.
    pub interval_ms: u64,
    /// A check not answered within this fails.
    pub timeout_ms: u64,
    /// Failed checks in a row that make an instance unhealthy.
    pub unhealthy_after: u32,
    /// Passed checks in a row that make it healthy (from starting or unhealthy).
    pub healthy_after: u32,
    /// Failed proxied requests in a row that eject it (0: never).
    pub eject_after: u32,
    /// The first ejection's length; each next one doubles, up to `eject_max_ms`.
    pub eject_base_ms: u64,
    pub eject_max_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: 500,
            timeout_ms: 500,
            unhealthy_after: 2,
            healthy_after: 1,
            eject_after: 3,
            eject_base_ms: 5_000,
            eject_max_ms: 60_000,
        }
    }
}

impl HealthConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            return Err((
                "topology.health.interval_ms",
                "interval_ms and timeout_ms must be greater than 0".into(),
            ));
        }
        if self.unhealthy_after == 0 || self.healthy_after == 0 {
            return Err((
                "topology.health.unhealthy_after",
                "unhealthy_after and healthy_after must be greater than 0".into(),
            ));
        }
        if self.eject_base_ms == 0 || self.eject_base_ms > self.eject_max_ms {
            return Err((
                "topology.health.eject_base_ms",
                "must be greater than 0 and at most eject_max_ms".into(),
            ));
        }
        Ok(())
    }
}

/// Where one module runs: `{ process = "payments", transport = "http" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub process: String,
    pub transport: TransportKind,
    /// How its instances share the calls of the gateway and of the HTTP and gRPC adapters:
    /// `round_robin` (default), `least_outstanding` (power of two choices), `random`,
    /// `consistent_hash` (by caller at the gateway, by correlation id on the bus), `weighted`
    /// (each instance as often as its process's `topology.weight`). Over NATS the broker's
    /// queue group chooses for bus calls.
    #[serde(default)]
    pub balance: banyan_bus::balance::BalanceRule,
}

/// `[topology]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// The process this one is (`banyan serve --process <name>`); `main` by default.
    pub process: String,
    /// Modules placed outside `main`, by name.
    pub modules: BTreeMap<String, Placement>,
    /// The NATS adapter's settings, used when a module is reached over NATS.
    pub nats: NatsConfig,
    /// The HTTP adapter's settings.
    pub http: HttpSettings,
    /// TLS on the internal listener, and the authority trusted for calls between processes.
    pub tls: Option<crate::tls::InternalTls>,
    /// Each process's key, and every process's public key (see [`crate::identity`]).
    pub identity: crate::identity::keys::IdentityConfig,
    /// Where the other processes reach the main process's registry: its internal listener.
    /// With several mains, each one's, comma-separated: a process registers with all of them.
    pub registry_url: String,
    /// This process's public base URL as main's gateway reaches it; derived from the bound
    /// address when absent.
    pub advertise_url: Option<String>,
    /// The internal listener: the bus's `/bus/v1/...` and (main) the registry, never on the
    /// public address. Default: main `127.0.0.1:9080` (the default `registry_url`), any
    /// other process `127.0.0.1:0` (a free port, which it advertises).
    pub internal_addr: Option<SocketAddr>,
    /// The internal listener's base URL as the other processes reach it; derived from its
    /// bound address when absent.
    pub internal_advertise_url: Option<String>,
    /// How often a process registers again (its heartbeat).
    pub heartbeat_ms: u64,
    /// An instance not heard from for this long is stale and leaves rotation.
    pub instance_ttl_ms: u64,
    /// Main's active health checks of the instances, and outlier ejection.
    pub health: HealthConfig,
    /// This process's share of its modules' calls where their balance rule is `weighted`
    /// (1 to 100; an instance of weight 3 gets three calls for another's one).
    pub weight: u32,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            process: MAIN.to_owned(),
            modules: BTreeMap::new(),
            nats: NatsConfig::default(),
            http: HttpSettings::default(),
            tls: None,
            identity: Default::default(),
            registry_url: format!("http://{MAIN_INTERNAL_ADDR}"),
            advertise_url: None,
            internal_addr: None,
            internal_advertise_url: None,
            heartbeat_ms: 1_000,
            instance_ttl_ms: 3_000,
            health: HealthConfig::default(),
            weight: 1,
        }
    }
}

/// `[topology.http]`: the HTTP adapter's tunables (see [`HttpTransportConfig`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub connect_timeout_ms: u64,
    pub event_timeout_ms: u64,
    pub publish_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let defaults = HttpTransportConfig::default();
        Self {
            connect_timeout_ms: defaults.connect_timeout_ms,
            event_timeout_ms: defaults.event_timeout_ms,
            publish_attempts: defaults.publish_attempts,
            backoff_base_ms: defaults.backoff_base_ms,
            backoff_max_ms: defaults.backoff_max_ms,
        }
    }
}

impl HttpSettings {
    /// The adapter's own configuration.
    pub fn transport_config(&self) -> HttpTransportConfig {
        HttpTransportConfig {
            connect_timeout_ms: self.connect_timeout_ms,
            event_timeout_ms: self.event_timeout_ms,
            publish_attempts: self.publish_attempts,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
        }
    }
}

impl TopologyConfig {
    /// Whether some module runs outside `main`. If not, the process is the plain monolith.
    pub fn is_active(&self) -> bool {
        self.modules.values().any(|p| p.process != MAIN)
    }

    /// Whether this process is the main one.
    pub fn is_main(&self) -> bool {
        self.process == MAIN
    }

    /// The process that hosts `module`.
    pub fn process_of(&self, module: &str) -> &str {
        self.modules
            .get(module)
            .map_or(MAIN, |p| p.process.as_str())
    }

    /// How each moved module's instances share calls (see [`Placement::balance`]), with
    /// their weights as `weights` has them.
    pub fn balancer(
        &self,
        weights: Arc<banyan_bus::balance::Weights>,
    ) -> banyan_bus::balance::Balancer {
        banyan_bus::balance::Balancer::new(
            self.modules
                .iter()
                .map(|(module, placement)| (module.clone(), placement.balance))
                .collect(),
        )
        .with_weights(weights)
    }

    /// Whether `module` runs in this process.
    pub fn hosts(&self, module: &str) -> bool {
        self.process_of(module) == self.process
    }

    /// The transport that reaches `module` from other processes; `None` for main's modules.
    pub fn transport_of(&self, module: &str) -> Option<TransportKind> {
        self.modules
            .get(module)
            .filter(|p| p.process != MAIN)
            .map(|p| p.transport)
    }

    fn uses(&self, kind: TransportKind) -> bool {
        self.modules
            .values()
            .any(|p| p.process != MAIN && p.transport == kind)
    }

    /// Whether some module is reached over NATS. Then every event travels over NATS.
    pub fn uses_nats(&self) -> bool {
        self.uses(TransportKind::Nats)
    }

    /// Whether some module is reached over HTTP. Then every process serves `/bus/v1/...`.
    pub fn uses_http(&self) -> bool {
        self.uses(TransportKind::Http)
    }

    /// Whether some module is reached over gRPC. Then every process serves
    /// `banyan.bus.v1.Bus`, and events not on NATS are pushed over gRPC.
    pub fn uses_grpc(&self) -> bool {
        self.uses(TransportKind::Grpc)
    }

    /// How this process reaches `module`, which it does not host: the module's own transport
    /// if it runs outside `main`; for main's modules, the transport this process's own modules
    /// are reached by (NATS first, then gRPC), HTTP otherwise.
    pub fn route_to(&self, module: &str) -> TransportKind {
        if let Some(kind) = self.transport_of(module) {
            return kind;
        }
        let own = |kind| {
            self.modules
                .values()
                .any(|p| p.process == self.process && p.transport == kind)
        };
        [TransportKind::Nats, TransportKind::Grpc]
            .into_iter()
            .find(|&kind| own(kind))
            .unwrap_or(TransportKind::Http)
    }

    /// The processes of the topology, `main` first.
    pub fn processes(&self) -> Vec<&str> {
        let mut processes = vec![MAIN];
        for placement in self.modules.values() {
            if !processes.contains(&placement.process.as_str()) {
                processes.push(&placement.process);
            }
        }
        processes
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub fn instance_ttl(&self) -> Duration {
        Duration::from_millis(self.instance_ttl_ms)
    }

    /// Where this process's internal listener binds (see [`Self::internal_addr`]).
    pub fn internal_bind(&self) -> SocketAddr {
        self.internal_addr.unwrap_or_else(|| {
            if self.is_main() {
                MAIN_INTERNAL_ADDR.parse().expect("a socket address")
            } else {
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        })
    }

    /// This process's internal base URL for the others: `internal_advertise_url`, or
    /// `http(s)://<bound internal address>`.
    pub fn internal_advertised(&self, bound: SocketAddr) -> String {
        Self::url_for(
            self.internal_advertise_url.as_deref(),
            bound,
            self.tls.is_some(),
        )
    }

    /// This process's public base URL for the gateway: `advertise_url`, or
    /// `http(s)://<bound address>` (an unspecified address becomes the loopback one).
    pub fn advertised(&self, bound: SocketAddr, tls: bool) -> String {
        Self::url_for(self.advertise_url.as_deref(), bound, tls)
    }

    pub(crate) fn url_for(configured: Option<&str>, bound: SocketAddr, tls: bool) -> String {
        if let Some(url) = configured {
            return url.trim_end_matches('/').to_owned();
        }
        let mut addr = bound;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("{}://{addr}", if tls { "https" } else { "http" })
    }

    /// Checks the section against the module names; the error names the key.
    pub fn validate(&self, known: &[&str]) -> Result<(), (String, String)> {
        let invalid = |key: &str, reason: String| Err((key.to_owned(), reason));
        self.health
            .validate()
            .map_err(|(key, reason)| (key.to_owned(), reason))?;
        if !(1..=banyan_bus::balance::Weights::MAX).contains(&self.weight) {
            return invalid(
                "topology.weight",
                format!(
                    "must be between 1 and {}, not {}",
                    banyan_bus::balance::Weights::MAX,
                    self.weight
                ),
            );
        }
        for (module, placement) in &self.modules {
            let key = format!("topology.modules.{module}");
            if !known.contains(&module.as_str()) {
                return invalid(
                    &key,
                    format!(
                        "no module named `{module}`; modules are {}",
                        known.join(", ")
                    ),
                );
            }
            if !is_process_name(&placement.process) {
                return invalid(
                    &format!("{key}.process"),
                    "must be 1 to 64 of a-z, 0-9, `-` and `_`".into(),
                );
            }
        }
        if !is_process_name(&self.process) {
            return invalid(
                "topology.process",
                "must be 1 to 64 of a-z, 0-9, `-` and `_`".into(),
            );
        }
        if !self.processes().contains(&self.process.as_str()) {
            return invalid(
                "topology.process",
                format!(
                    "no module is placed in process `{}`; the processes are {}",
                    self.process,
                    self.processes().join(", ")
                ),
            );
        }
        if self.heartbeat_ms == 0 {
            return invalid("topology.heartbeat_ms", "must be greater than 0".into());
        }
        if self.instance_ttl_ms <= self.heartbeat_ms {
            return invalid(
                "topology.instance_ttl_ms",
                "must be greater than topology.heartbeat_ms".into(),
            );
        }
        for url in self.registry_urls() {
            check_url(&url).map_err(|r| ("topology.registry_url".to_owned(), r))?;
        }
        if let Some(url) = &self.advertise_url {
            check_url(url).map_err(|r| ("topology.advertise_url".to_owned(), r))?;
        }
        if let Some(url) = &self.internal_advertise_url {
            check_url(url).map_err(|r| ("topology.internal_advertise_url".to_owned(), r))?;
        }
        let http = &self.http;
        if http.connect_timeout_ms == 0 {
            return invalid(
                "topology.http.connect_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if http.event_timeout_ms == 0 {
            return invalid(
                "topology.http.event_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if http.publish_attempts == 0 {
            return invalid(
                "topology.http.publish_attempts",
                "must be at least 1".into(),
            );
        }
        if http.backoff_base_ms == 0 {
            return invalid(
                "topology.http.backoff_base_ms",
                "must be greater than 0".into(),
            );
        }
        if http.backoff_max_ms < http.backoff_base_ms {
            return invalid(
                "topology.http.backoff_max_ms",
                "must be at least topology.http.backoff_base_ms".into(),
            );
        }
        self.identity.validate()?;
        if self.is_active() && self.uses_nats() {
            self.nats
                .validate()
                .map_err(|(key, reason)| (format!("topology.{key}"), reason))?;
        }
        Ok(())
    }
}

fn is_process_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl TopologyConfig {
    /// Each main's registry, from `registry_url`.
    pub fn registry_urls(&self) -> Vec<String> {
        self.registry_url
            .split(',')
            .map(|url| url.trim().to_owned())
            .collect()
    }
}

fn check_url(raw: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 3] = ["orders", "payments", "inventory"];

    fn topology(modules: &[(&str, &str, TransportKind)]) -> TopologyConfig {
        TopologyConfig {
            modules: modules
                .iter()
                .map(|(m, p, t)| {
                    (
                        (*m).to_owned(),
                        Placement {
                            process: (*p).to_owned(),
                            transport: *t,
                            balance: Default::default(),
                        },
                    )
                })
                .collect(),
            identity: crate::identity::keys::IdentityConfig {
                key: Some(crate::identity::keys::new_key_pair().0),
                ..Default::default()
            },
            ..TopologyConfig::default()
        }
    }

    #[test]
    fn no_placement_is_the_monolith() {
        let topology = TopologyConfig::default();
        assert!(!topology.is_active());
        assert!(topology.hosts("payments"));
        assert!(topology.validate(&KNOWN).is_ok());
    }

    #[test]
    fn each_process_hosts_its_share_and_reaches_the_rest() {
        let mut topology = topology(&[
            ("payments", "payments", TransportKind::Http),
            ("inventory", "stock", TransportKind::Nats),
        ]);
        assert!(topology.is_active() && topology.uses_http() && topology.uses_nats());
        assert!(topology.hosts("orders") && !topology.hosts("payments"));
        assert_eq!(topology.route_to("payments"), TransportKind::Http);
        topology.process = "payments".into();
        assert!(topology.hosts("payments") && !topology.hosts("orders"));
        assert_eq!(topology.route_to("orders"), TransportKind::Http);
        topology.process = "stock".into();
        assert_eq!(topology.route_to("orders"), TransportKind::Nats);
        assert_eq!(topology.processes(), vec!["main", "stock", "payments"]);
    }

    #[test]
    fn a_process_reached_over_grpc_reaches_main_over_grpc() {
        let mut topology = topology(&[
            ("payments", "payments", TransportKind::Grpc),
            ("inventory", "stock", TransportKind::Http),
        ]);
        assert!(topology.uses_grpc() && topology.uses_http() && !topology.uses_nats());
        assert_eq!(topology.route_to("payments"), TransportKind::Grpc);
        assert_eq!(topology.route_to("inventory"), TransportKind::Http);
        topology.process = "payments".into();
        assert_eq!(topology.route_to("orders"), TransportKind::Grpc);
        assert_eq!(topology.route_to("inventory"), TransportKind::Http);
        topology.process = "stock".into();
        assert_eq!(topology.route_to("orders"), TransportKind::Http);
        assert_eq!(topology.route_to("payments"), TransportKind::Grpc);
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = |t: &TopologyConfig| t.validate(&KNOWN).unwrap_err().0;
        let mut t = topology(&[("payment", "payments", TransportKind::Http)]);
        assert_eq!(key(&t), "topology.modules.payment");
        t = topology(&[("payments", "Pay Ments", TransportKind::Http)]);
        assert_eq!(key(&t), "topology.modules.payments.process");
        t = topology(&[("payments", "payments", TransportKind::Http)]);
        t.process = "nowhere".into();
        assert_eq!(key(&t), "topology.process");
        t = topology(&[("payments", "payments", TransportKind::Http)]);
        t.registry_url = "nowhere".into();
        assert_eq!(key(&t), "topology.registry_url");
        // Several mains: each URL is checked.
        t.registry_url = "http://10.0.0.1:9080, nowhere".into();
        assert_eq!(key(&t), "topology.registry_url");
        t.registry_url = "http://10.0.0.1:9080, http://10.0.0.2:9080".into();
        assert!(t.validate(&KNOWN).is_ok());
        assert_eq!(
            t.registry_urls(),
            ["http://10.0.0.1:9080", "http://10.0.0.2:9080"]
        );
        t = topology(&[("payments", "payments", TransportKind::Http)]);
        t.instance_ttl_ms = t.heartbeat_ms;
        assert_eq!(key(&t), "topology.instance_ttl_ms");
        t = topology(&[("payments", "payments", TransportKind::Nats)]);
        t.nats.stream = "a.b".into();
        assert_eq!(key(&t), "topology.nats.stream");
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let t = topology(&[("payments", "payments", TransportKind::Http)]);
        let text = format!("{t:?}");
        let key = t.identity.key.clone().unwrap();
        assert!(!text.contains(&key), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn the_advertised_url_defaults_to_the_bound_address() {
        let t = TopologyConfig::default();
        assert_eq!(
            t.advertised("0.0.0.0:9000".parse().unwrap(), false),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            t.advertised("10.1.2.3:9000".parse().unwrap(), false),
            "http://10.1.2.3:9000"
        );
    }
}
