//! The registry itself, kept by the main process: which instances of each module are up.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use banyan_bus::{
    balance::Weights,
    http::{Instances, Subscribers},
};
use banyan_kit::ApiError;

use crate::topology::{HealthConfig, MAIN, TopologyConfig};

use super::{
    Arrivals, Health, InstanceTransport, InstanceView, Listing, ModuleListing, Registration,
    events::Awareness, health::Probe,
};

/// The registry of the main process.
#[derive(Debug)]
pub(crate) struct Registry {
    topology: Arc<TopologyConfig>,
    /// Every module Banyan has.
    known: Vec<&'static str>,
    ttl: Duration,
    forget_after: Duration,
    checks: HealthConfig,
    state: RwLock<Table>,
    /// Each instance's weight by base URL and by bus URL, for the balancers.
    weights: Arc<Weights>,
    /// What is done when a module elsewhere comes (back) into rotation.
    arrivals: Arrivals,
}

#[derive(Debug, Default)]
struct Table {
    instances: BTreeMap<String, Entry>,
    /// What each module subscribes to, learned from its registrations (kept when its
    /// instances go, so events keep reaching it through the outbox once one is back).
    subscriptions: BTreeMap<String, Vec<String>>,
    /// The main process's own entry, never stale.
    own: Option<String>,
}

#[derive(Debug)]
struct Entry {
    registration: Registration,
    registered_at_ms: i64,
    last_heartbeat_ms: i64,
    seen: Instant,
    /// What main's health checks and proxied requests have shown of it.
    probe: Probe,
    /// It said it is leaving: out of rotation, forgotten once silent.
    stopping: bool,
}

/// Why a registration is refused.
#[derive(Debug)]
pub(crate) enum Refused {
    Invalid(&'static str, String),
    Conflict(String),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Invalid(field, reason) => ApiError::invalid(field, reason),
            Refused::Conflict(reason) => ApiError::conflict("wrong_process", reason),
        }
    }
}

impl Registry {
    pub(crate) fn new(topology: Arc<TopologyConfig>, known: Vec<&'static str>) -> Self {
        let ttl = topology.instance_ttl();
        Self {
            checks: topology.health.clone(),
            topology,
            known,
            ttl,
            forget_after: ttl * 10,
            state: RwLock::default(),
            weights: Arc::default(),
            arrivals: Arrivals::default(),
        }
    }

    /// The same registry, doing `arrivals` when a module elsewhere comes (back) into rotation.
    pub(crate) fn with_arrivals(mut self, arrivals: Arrivals) -> Self {
        self.arrivals = arrivals;
        self
    }

    /// Looks for modules elsewhere newly in rotation (after each round of health checks).
    fn note_arrivals(&self) {
        let in_rotation = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            state
                .instances
                .iter()
                .filter(|(id, entry)| {
                    state.own.as_ref() != Some(*id)
                        && self.health(&state, id, entry) == Health::Healthy
                })
                .flat_map(|(_, entry)| entry.registration.modules.iter().map(|m| m.name.clone()))
                .collect()
        };
        self.arrivals.observe(in_rotation);
    }

    /// The instances' weights, as their registrations say.
    pub(crate) fn weights(&self) -> Arc<Weights> {
        self.weights.clone()
    }

    /// Records the main process itself (its own modules, never stale).
    pub(crate) fn register_own(&self, registration: Registration) {
        let now = banyan_db::now_millis();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for module in &registration.modules {
            state
                .subscriptions
                .insert(module.name.clone(), module.subscriptions.clone());
        }
        state.own = Some(registration.instance_id.clone());
        state.instances.insert(
            registration.instance_id.clone(),
            Entry {
                registration,
                registered_at_ms: now,
                last_heartbeat_ms: now,
                seen: Instant::now(),
                probe: Probe::default(),
                stopping: false,
            },
        );
    }

    /// Checks and records a registration or heartbeat of another process.
    pub(crate) fn register(&self, registration: Registration) -> Result<(), Refused> {
        let id = &registration.instance_id;
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        {
            return Err(Refused::Invalid(
                "instance_id",
                "must be 1 to 128 visible ASCII characters without `/`".into(),
            ));
        }
        for (field, url) in [
            ("base_url", &registration.base_url),
            ("bus_url", &registration.bus_url),
        ] {
            match reqwest::Url::parse(url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                }
                _ => {
                    return Err(Refused::Invalid(
                        field,
                        "must be an http:// or https:// URL".into(),
                    ));
                }
            }
        }
        if registration.modules.is_empty() {
            return Err(Refused::Invalid("modules", "must name a module".into()));
        }
        if !(1..=Weights::MAX).contains(&registration.weight) {
            return Err(Refused::Invalid(
                "weight",
                format!("must be between 1 and {}", Weights::MAX),
            ));
        }
        for module in &registration.modules {
            if !self.known.contains(&module.name.as_str()) {
                return Err(Refused::Invalid(
                    "modules",
                    format!("no module named `{}`", module.name),
                ));
            }
            let placed = self.topology.process_of(&module.name);
            if placed == MAIN || placed != registration.process {
                return Err(Refused::Conflict(format!(
                    "module `{}` runs in process `{placed}` in this topology, not in `{}`",
                    module.name, registration.process
                )));
            }
            if module.transport == InstanceTransport::InProcess {
                return Err(Refused::Invalid(
                    "modules",
                    "a registered module is reached over http or nats".into(),
                ));
            }
        }
        let now = banyan_db::now_millis();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.own.as_ref() == Some(id) {
            return Err(Refused::Conflict(
                "that instance id is the main process's".into(),
            ));
        }
        for module in &registration.modules {
            state
                .subscriptions
                .insert(module.name.clone(), module.subscriptions.clone());
        }
        self.weights
            .set(&registration.base_url, registration.weight);
        self.weights.set(&registration.bus_url, registration.weight);
        let (registered_at_ms, probe) = match state.instances.get(id) {
            // A heartbeat: what the checks found stands.
            Some(entry) if entry.registration.base_url == registration.base_url => {
                (entry.registered_at_ms, entry.probe.clone())
            }
            _ => {
                tracing::info!(instance_id = %id, process = %registration.process, base_url = %registration.base_url, "Instance registered.");
                (now, Probe::default())
            }
        };
        state.instances.insert(
            id.clone(),
            Entry {
                registration,
                registered_at_ms,
                last_heartbeat_ms: now,
                seen: Instant::now(),
                probe,
                stopping: false,
            },
        );
        Ok(())
    }

    /// Removes an instance (it left); whether it was there.
    /// Removes instance `instance_id` if process `process` registered it (no process can
    /// take another's instances out of rotation).
    pub(crate) fn remove(&self, process: &str, instance_id: &str) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.own.as_deref() == Some(instance_id) {
            return false;
        }
        match state.instances.get_mut(instance_id) {
            Some(entry) if entry.registration.process == process => {
                entry.stopping = true;
                tracing::info!(instance_id, "Instance stopping; out of rotation.");
                true
            }
            _ => false,
        }
    }

    fn health(&self, state: &Table, id: &str, entry: &Entry) -> Health {
        if state.own.as_deref() == Some(id) {
            Health::Healthy
        } else if entry.stopping {
            Health::Stopping
        } else if entry.seen.elapsed() > self.ttl {
            Health::Stale
        } else {
            entry.probe.health()
        }
    }

    /// The instances main checks: every other process's, unless it is stopping.
    pub(crate) fn to_check(&self) -> Vec<(String, String)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .instances
            .iter()
            .filter(|(id, entry)| state.own.as_ref() != Some(*id) && !entry.stopping)
            .map(|(id, entry)| (id.clone(), entry.registration.base_url.clone()))
            .collect()
    }

    /// Records one health check of instance `id`.
    pub(crate) fn checked(&self, id: &str, passed: bool) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = state.instances.get_mut(id) {
            let before = entry.probe.health();
            entry.probe.checked(passed, &self.checks);
            let after = entry.probe.health();
            if before != after {
                tracing::warn!(
                    instance_id = id,
                    ?before,
                    ?after,
                    "Instance health changed."
                );
            }
        }
    }

    /// Records how a request the gateway proxied to the instance at `base_url` went; ejects
    /// the instance after `topology.health.eject_after` failures in a row, unless it is the
    /// last of its modules in rotation.
    pub(crate) fn proxied(&self, base_url: &str, ok: bool) {
        // Most requests succeed on an instance with no failures to forget: nothing changes,
        // and the gateway's hot path takes no write lock.
        if ok {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let clean = state
                .instances
                .values()
                .find(|entry| entry.registration.base_url == base_url)
                .is_none_or(|entry| entry.probe.no_failed_requests());
            if clean {
                return;
            }
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let Some((id, modules)) = state
            .instances
            .iter()
            .find(|(_, entry)| entry.registration.base_url == base_url)
            .map(|(id, entry)| {
                let modules: Vec<String> = entry
                    .registration
                    .modules
                    .iter()
                    .map(|m| m.name.clone())
                    .collect();
                (id.clone(), modules)
            })
        else {
            return;
        };
        let others_in_rotation = state
            .instances
            .iter()
            .filter(|(other, entry)| {
                **other != id
                    && entry
                        .registration
                        .modules
                        .iter()
                        .any(|m| modules.contains(&m.name))
                    && self.health(&state, other, entry) == Health::Healthy
            })
            .count();
        if let Some(entry) = state.instances.get_mut(&id)
            && entry
                .probe
                .proxied(ok, others_in_rotation > 0, &self.checks)
        {
            tracing::warn!(instance_id = %id, %base_url, "Instance ejected: its requests keep failing.");
        }
    }

    /// Forgets instances silent for ten times the TTL.
    fn prune(&self) {
        let forget_after = self.forget_after;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let own = state.own.clone();
        let ttl = self.ttl;
        state.instances.retain(|id, entry| {
            let silent = entry.seen.elapsed();
            let keep = own.as_ref() == Some(id)
                || (silent <= forget_after && !(entry.stopping && silent > ttl));
            if !keep {
                tracing::info!(instance_id = %id, "Stale instance forgotten.");
            }
            keep
        });
    }

    /// `module`'s own name, if Banyan has such a module.
    pub(crate) fn known_module(&self, module: &str) -> Option<&'static str> {
        self.known.iter().copied().find(|known| *known == module)
    }

    /// Every module, with its instances.
    pub(crate) fn listing(&self) -> Listing {
        self.prune();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut modules = BTreeMap::new();
        for &module in &self.known {
            let process = self.topology.process_of(module).to_owned();
            let transport = self
                .topology
                .transport_of(module)
                .map_or(InstanceTransport::InProcess, Into::into);
            let subscriptions = match state.subscriptions.get(module) {
                Some(subjects) => Some(subjects.clone()),
                // Main's modules are known from the start (not hosted: nothing to deliver).
                None if process == MAIN => Some(Vec::new()),
                None => None,
            };
            let instances = state
                .instances
                .iter()
                .filter_map(|(id, entry)| {
                    let hosted = entry
                        .registration
                        .modules
                        .iter()
                        .find(|m| m.name == module)?;
                    Some(InstanceView {
                        instance_id: id.clone(),
                        process: entry.registration.process.clone(),
                        base_url: entry.registration.base_url.clone(),
                        bus_url: entry.registration.bus_url.clone(),
                        metrics_url: entry.registration.metrics_url.clone(),
                        transport: hosted.transport,
                        weight: entry.registration.weight,
                        registered_at_ms: entry.registered_at_ms,
                        last_heartbeat_ms: if state.own.as_ref() == Some(id) {
                            banyan_db::now_millis()
                        } else {
                            entry.last_heartbeat_ms
                        },
                        health: self.health(&state, id, entry),
                    })
                })
                .collect();
            modules.insert(
                module.to_owned(),
                ModuleListing {
                    process,
                    transport,
                    subscriptions,
                    instances,
                    breaker: None,
                },
            );
        }
        Listing { modules }
    }

    /// The public base URLs of `module`'s healthy instances.
    pub(crate) fn healthy(&self, module: &str) -> Vec<String> {
        self.healthy_urls(module, |r| &r.base_url)
    }

    fn healthy_urls(&self, module: &str, url: impl Fn(&Registration) -> &String) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .instances
            .iter()
            .filter(|(id, entry)| {
                entry.registration.modules.iter().any(|m| m.name == module)
                    && self.health(&state, id, entry) == Health::Healthy
            })
            .map(|(_, entry)| url(&entry.registration).clone())
            .collect()
    }
}

/// Checks every registered instance every `interval_ms`, for as long as the registry lives.
pub(crate) fn spawn_checks(
    registry: &Arc<Registry>,
    client: reqwest::Client,
    config: HealthConfig,
) {
    let registry = Arc::downgrade(registry);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(config.interval_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let checks = registry.to_check().into_iter().map(|(id, base)| {
                let client = client.clone();
                let timeout = Duration::from_millis(config.timeout_ms);
                async move {
                    let url = format!("{}/health", base.trim_end_matches('/'));
                    let passed = matches!(
                        client.get(url).timeout(timeout).send().await,
                        Ok(answer) if answer.status().is_success()
                    );
                    (id, passed)
                }
            });
            for (id, passed) in futures::future::join_all(checks).await {
                registry.checked(&id, passed);
            }
            registry.note_arrivals();
        }
    });
}

impl Instances for Registry {
    /// The internal listeners of `module`'s healthy instances, for the bus.
    fn instances(&self, module: &str) -> Vec<String> {
        self.healthy_urls(module, |r| &r.bus_url)
    }
}

impl Subscribers for Registry {
    /// The modules outside main known to subscribe to `subject`.
    fn modules_for(&self, subject: &str) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        self.known
            .iter()
            .filter(|m| self.topology.process_of(m) != MAIN)
            .filter(|m| {
                state
                    .subscriptions
                    .get(**m)
                    .is_some_and(|subjects| subjects.iter().any(|s| s == subject))
            })
            .map(|m| (*m).to_owned())
            .collect()
    }
}

impl Awareness for Registry {
    fn unknown(&self) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        self.known
            .iter()
            .filter(|m| self.topology.process_of(m) != MAIN)
            .filter(|m| !state.subscriptions.contains_key(**m))
            .map(|m| (*m).to_owned())
            .collect()
    }
}
