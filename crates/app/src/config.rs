//! Configuration: figment layers, then validation that names the bad key.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use banyan_bus::BusConfig;
use banyan_db::DatabaseConfig;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::Deserialize;

use crate::{
    secrets::{self, Origin},
    topology::TopologyConfig,
};

/// `config/default.toml`, compiled in so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// Top-level sections; environment variables outside them (`BANYAN_FAILPOINTS`, test
/// settings) are not configuration.
const SECTIONS: [&str; 10] = [
    "server", "database", "bus", "auth", "log", "metrics", "traces", "modules", "topology",
    "gateway",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    /// The metrics listener (`/metrics` in Prometheus's text format).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OTLP export of every hop's span (off by default).
    #[serde(default)]
    pub traces: crate::telemetry::traces::TracesConfig,
    /// Per-module sections, read by each module itself.
    #[serde(default)]
    pub modules: BTreeMap<String, figment::value::Value>,
    /// Which process hosts each module and how it is reached (absent: all in this process).
    #[serde(default)]
    pub topology: TopologyConfig,
    /// The gateway routes: rate limits, timeouts, retries, breaker, body limits per route.
    #[serde(default)]
    pub gateway: crate::route_policy::GatewayConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// The modules this process hosts (default: all of them; with a topology, all that it
    /// places in this process).
    #[serde(default)]
    pub modules: Option<Vec<String>>,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    /// Requests this listener handles at once; one more is answered 503 at once (load
    /// shedding), before queues grow.
    pub max_in_flight: usize,
    /// Requests one module's routes handle at once, so a slow module fills its own share and
    /// the others keep answering.
    pub max_in_flight_per_module: usize,
    /// Where a development run keeps what it generates for itself (its secrets).
    pub state_dir: PathBuf,
    /// TLS on the public listener (`[server.tls]`); plaintext without.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTls>,
}

impl ServerConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Where a process serves `/metrics`: a listener of its own, never the public one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Default: main (and a one-process shop) 127.0.0.1:9464, any other process of a split
    /// 127.0.0.1:0 (a free port, which it registers).
    pub addr: Option<SocketAddr>,
    /// Its URL as main and Prometheus reach it (default: http://<bound address>).
    pub advertise_url: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: None,
            advertise_url: None,
        }
    }
}

/// Main's (and a one-process shop's) metrics listener unless `metrics.addr` says otherwise:
/// OpenTelemetry's Prometheus exporter port.
pub const MAIN_METRICS_ADDR: &str = "127.0.0.1:9464";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The HS256 key; generated for a development run on loopback when absent (see
    /// [`crate::secrets`]).
    #[serde(default)]
    pub jwt_secret: Option<String>,
    pub token_ttl_secs: u64,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &"<redacted>")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter; `RUST_LOG`, when set, wins. Unset: `info` for `serve`, `warn` for the
    /// one-shot commands, whose own output is what a person wants to read.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty when stderr is a terminal, JSON lines otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Text for a person; coloured only on a terminal.
    Pretty,
}

impl LogConfig {
    /// The filter in force: `RUST_LOG` if set, else `log.level`, else `default_level`.
    pub fn filter(
        &self,
        default_level: &str,
    ) -> Result<tracing_subscriber::EnvFilter, ConfigError> {
        let (key, directives) = match std::env::var("RUST_LOG") {
            Ok(value) if !value.trim().is_empty() => ("RUST_LOG", value),
            _ => (
                "log.level",
                self.level
                    .clone()
                    .unwrap_or_else(|| default_level.to_owned()),
            ),
        };
        // PostgreSQL's notices ("relation ... already exists, skipping" at every start) are
        // noise at info; a filter that names sqlx decides for itself.
        let directives = if directives.contains("sqlx") {
            directives
        } else {
            format!("sqlx::postgres::notice=warn,{directives}")
        };
        tracing_subscriber::EnvFilter::try_new(&directives).map_err(|e| ConfigError::Invalid {
            key: key.to_owned(),
            reason: format!("is not a valid tracing filter: {e}"),
        })
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// The layers: defaults, then each `--config` file (which must exist), then `BANYAN_*`
/// variables. CLI flags are merged on top by the caller.
/// The compiled-in defaults alone: no file, no environment.
pub fn defaults() -> figment::providers::Data<Toml> {
    Toml::string(DEFAULTS)
}

pub fn layers(files: &[PathBuf]) -> Result<Figment, ConfigError> {
    if let Some(name) = unknown_variable(std::env::vars_os().map(|(name, _)| name)) {
        return Err(ConfigError::Load(format!(
            "environment variable {name} names no setting: BANYAN_<SECTION>__<KEY> takes a \
             section of {}",
            SECTIONS.map(str::to_ascii_uppercase).join(", ")
        )));
    }
    let mut figment = Figment::from(Toml::string(DEFAULTS));
    for file in files {
        if !file.is_file() {
            return Err(ConfigError::Load(format!(
                "configuration file {} does not exist or is not a file",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    Ok(figment.merge(
        Env::prefixed("BANYAN_")
            .split("__")
            // Keys are not lower-cased yet when the filter sees them.
            .filter(|key| {
                let section = key.as_str().split('.').next().unwrap_or_default();
                SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
            }),
    ))
}

/// The `BANYAN_*` variables that are not settings: the project's tools and tests read them.
const NOT_SETTINGS: [&str; 5] = [
    "BANYAN_BIN",
    "BANYAN_FAILPOINTS",
    "BANYAN_LOAD_ADMIN_PASSWORD",
    "BANYAN_CRASH_CHILD",
    "BANYAN_CRASH_ORDER",
];

/// ...and the prefixes of the families of them.
const NOT_SETTINGS_PREFIXES: [&str; 3] = ["BANYAN_TEST_", "BANYAN_BENCH_", "BANYAN_SKIP_"];

/// The first `BANYAN_*` variable among `names` whose section is none of Banyan's (a typo such
/// as `BANYAN_SERVR__ADDR` would otherwise be ignored without a word), the project's own
/// non-setting variables aside.
fn unknown_variable(names: impl Iterator<Item = std::ffi::OsString>) -> Option<String> {
    names
        .filter_map(|name| name.into_string().ok())
        .filter(|name| name.starts_with("BANYAN_"))
        .filter(|name| !NOT_SETTINGS.contains(&name.as_str()))
        .filter(|name| !NOT_SETTINGS_PREFIXES.iter().any(|p| name.starts_with(p)))
        .find(|name| {
            let section = name["BANYAN_".len()..]
                .split("__")
                .next()
                .unwrap_or_default();
            !SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
        })
}

/// Sets one key on top of every layer (for CLI flags and tests).
pub fn with(figment: Figment, key: &str, value: impl serde::Serialize) -> Figment {
    figment.merge(Serialized::default(key, value))
}

/// Extracts and checks the settings.
pub fn load(figment: &Figment) -> Result<Settings, ConfigError> {
    let settings: Settings = figment.extract().map_err(|errors| {
        ConfigError::Load(
            errors
                .into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    let origin = e
                        .metadata
                        .as_ref()
                        .map(|m| match &m.source {
                            Some(source) => format!(" (from {} {source})", m.name),
                            None => format!(" (from {})", m.name),
                        })
                        .unwrap_or_default();
                    if key.is_empty() {
                        format!("configuration error: {}{origin}", e.kind)
                    } else {
                        format!("invalid value for `{key}`: {}{origin}", e.kind)
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    settings.validate()?;
    Ok(settings)
}

impl Settings {
    /// Fills in the secrets the configuration leaves out (see [`crate::secrets`]), or refuses
    /// to start, naming the key. `listening` is every address the process binds. Returns where
    /// each secret came from.
    pub fn resolve_secrets(
        &mut self,
        listening: &[SocketAddr],
    ) -> Result<Vec<(&'static str, Origin)>, ConfigError> {
        let exposed = listening.iter().find(|addr| !addr.ip().is_loopback());
        let dir = self.server.state_dir.clone();
        // The split's processes prove themselves with keys of their own: see `identity`.
        [("auth.jwt_secret", "jwt_secret", &mut self.auth.jwt_secret)]
            .into_iter()
            .map(|(key, file, slot)| {
                secrets::fill(slot, file, &dir, exposed)
                    .map(|origin| (key, origin))
                    .map_err(|reason| ConfigError::Invalid {
                        key: key.to_owned(),
                        reason,
                    })
            })
            .collect()
    }

    /// Every address this process listens on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        let mut addrs = vec![self.server.addr];
        if self.topology.is_active() {
            addrs.push(self.topology.internal_bind());
        }
        addrs
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        };
        if !(1_024..=64 * 1024 * 1024).contains(&self.server.max_body_bytes) {
            return Err(invalid(
                "server.max_body_bytes",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        if let Some(modules) = &self.server.modules {
            let known: Vec<&str> = crate::modules::all_modules()
                .iter()
                .map(|m| m.name())
                .collect();
            if let Some(unknown) = modules.iter().find(|m| !known.contains(&m.as_str())) {
                return Err(invalid(
                    "server.modules",
                    &format!(
                        "no module named `{unknown}`; modules are {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        if self.server.max_in_flight == 0
            || self.server.max_in_flight_per_module == 0
            || self.server.max_in_flight_per_module > self.server.max_in_flight
        {
            return Err(invalid(
                "server.max_in_flight_per_module",
                "max_in_flight and max_in_flight_per_module must be greater than 0, the second \
                 at most the first",
            ));
        }
        if self.server.request_timeout_ms == 0 {
            return Err(invalid(
                "server.request_timeout_ms",
                "must be greater than 0",
            ));
        }
        if let Some(secret) = &self.auth.jwt_secret {
            secrets::check(secret).map_err(|reason| invalid("auth.jwt_secret", reason))?;
        }
        if !(60..=30 * 24 * 3600).contains(&self.auth.token_ttl_secs) {
            return Err(invalid(
                "auth.token_ttl_secs",
                "must be between 60 s and 30 days",
            ));
        }
        self.traces
            .validate()
            .map_err(|(key, reason)| invalid(key, &reason))?;
        self.log.filter("info")?;
        self.database
            .validate()
            .map_err(|(key, e)| invalid(&key, &e.to_string()))?;
        self.bus
            .validate()
            .map_err(|(key, reason)| invalid(&key, &reason))?;
        self.gateway
            .validate(self.server.max_body_bytes)
            .map_err(|(key, reason)| invalid(&key, &reason))?;
        let known: Vec<&str> = crate::modules::all_modules()
            .iter()
            .map(|m| m.name())
            .collect();
        self.topology
            .validate(&known)
            .map_err(|(key, reason)| invalid(&key, &reason))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_banyan_variable_of_no_section_is_named() {
        let names = |names: &[&str]| {
            names
                .iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        let unknown = |list: &[&str]| unknown_variable(names(list).into_iter());
        assert_eq!(
            unknown(&["PATH", "BANYAN_SERVER__ADDR", "BANYAN_SERVR__ADDR"]),
            Some("BANYAN_SERVR__ADDR".to_owned())
        );
        assert_eq!(unknown(&["BANYAN_DEBUG"]), Some("BANYAN_DEBUG".to_owned()));
        assert_eq!(
            unknown(&[
                "BANYAN_LOG__LEVEL",
                "BANYAN_modules__users__login_limit__per_account",
                "BANYAN_TEST_POSTGRES_URL",
                "BANYAN_FAILPOINTS",
                "BANYAN_BENCH_SETUPS",
                "OTHER_SERVR__ADDR",
            ]),
            None
        );
    }

    #[test]
    fn the_shipped_defaults_load() {
        let settings = load(&Figment::from(Toml::string(DEFAULTS))).unwrap();
        assert_eq!(settings.server.addr.port(), 8080);
        assert_eq!(settings.database.url, "sqlite://data");
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key() {
        let figment = with(
            Figment::from(Toml::string(DEFAULTS)),
            "server.addr",
            "nowhere",
        );
        let error = load(&figment).unwrap_err().to_string();
        assert!(error.contains("server.addr"), "{error}");

        let figment = with(Figment::from(Toml::string(DEFAULTS)), "bus.event_queue", 0);
        let error = load(&figment).unwrap_err().to_string();
        assert!(error.contains("bus.event_queue"), "{error}");

        let figment = with(
            Figment::from(Toml::string(DEFAULTS)),
            "database.url",
            "mysql://x",
        );
        let error = load(&figment).unwrap_err().to_string();
        assert!(error.contains("database.url"), "{error}");
    }

    #[test]
    fn a_topology_is_read_and_checked_by_key() {
        let base = || {
            with(
                Figment::from(Toml::string(DEFAULTS)),
                "topology.modules.payments",
                serde_json::json!({ "process": "payments", "transport": "http" }),
            )
        };
        let settings = load(&base()).unwrap();
        assert!(settings.topology.is_active());
        assert!(!settings.topology.hosts("payments"));

        let error = load(&with(base(), "topology.process", "elsewhere"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("topology.process"), "{error}");
        let error = load(&with(
            base(),
            "topology.modules.payments.transport",
            "carrier-pigeon",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("topology.modules.payments.transport"),
            "{error}"
        );
        let error = load(&with(base(), "topology.identity.key", "short-key"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("topology.identity.key"), "{error}");
        assert!(
            !error.contains("short-key"),
            "the key is not echoed: {error}"
        );
    }

    #[test]
    fn the_shipped_topologies_load() {
        for file in [
            "split-payments-http.toml",
            "split-payments-grpc.toml",
            "split-payments-nats.toml",
            "split-inventory-payments-nats.toml",
        ] {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../config")
                .join(file);
            let figment = Figment::from(Toml::string(DEFAULTS)).merge(Toml::file_exact(&path));
            let settings = load(&figment).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(settings.topology.is_active(), "{file}");
            for process in settings.topology.processes() {
                let figment = with(figment.clone(), "topology.process", process);
                load(&figment).unwrap_or_else(|e| panic!("{file} --process {process}: {e}"));
            }
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let figment = with(Figment::from(Toml::string(DEFAULTS)), "server.adress", "x");
        let error = load(&figment).unwrap_err().to_string();
        assert!(error.contains("adress"), "{error}");
    }
}
