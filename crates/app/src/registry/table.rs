//! The registry itself, kept by the main process: which instances of each module are up.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use banyan_bus::http::{Instances, Subscribers};
use banyan_kit::ApiError;

use crate::topology::{MAIN, TopologyConfig};

use super::{
    Health, InstanceTransport, InstanceView, Listing, ModuleListing, Registration,
    events::Awareness,
};

/// The registry of the main process.
#[derive(Debug)]
pub(crate) struct Registry {
    topology: Arc<TopologyConfig>,
    /// Every module Banyan has.
    known: Vec<&'static str>,
    ttl: Duration,
    forget_after: Duration,
    state: RwLock<Table>,
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
            topology,
            known,
            ttl,
            forget_after: ttl * 10,
            state: RwLock::default(),
        }
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
        let registered_at_ms = match state.instances.get(id) {
            Some(entry) => entry.registered_at_ms,
            None => {
                tracing::info!(instance_id = %id, process = %registration.process, base_url = %registration.base_url, "Instance registered.");
                now
            }
        };
        state.instances.insert(
            id.clone(),
            Entry {
                registration,
                registered_at_ms,
                last_heartbeat_ms: now,
                seen: Instant::now(),
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
        let owned = state
            .instances
            .get(instance_id)
            .is_some_and(|entry| entry.registration.process == process);
        let removed = owned && state.instances.remove(instance_id).is_some();
        if removed {
            tracing::info!(instance_id, "Instance left.");
        }
        removed
    }

    fn health(&self, state: &Table, id: &str, entry: &Entry) -> Health {
        if state.own.as_deref() == Some(id) || entry.seen.elapsed() <= self.ttl {
            Health::Healthy
        } else {
            Health::Stale
        }
    }

    /// Forgets instances silent for ten times the TTL.
    fn prune(&self) {
        let forget_after = self.forget_after;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let own = state.own.clone();
        state.instances.retain(|id, entry| {
            let keep = own.as_ref() == Some(id) || entry.seen.elapsed() <= forget_after;
            if !keep {
                tracing::info!(instance_id = %id, "Stale instance forgotten.");
            }
            keep
        });
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
                        transport: hosted.transport,
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
