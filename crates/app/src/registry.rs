//! The registry: which instances of each module are up, and where.
//!
//! The main process keeps it ([`Registry`]). Every other process registers itself at start
//! (`POST /api/v1/services/register`, with the shared secret), sends the same registration
//! again every `topology.heartbeat_ms` (its heartbeat; the answer is the current [`Listing`],
//! which it keeps in its [`Directory`]) and leaves on a graceful shutdown
//! (`DELETE /api/v1/services/{instance_id}`). An instance not heard from for
//! `topology.instance_ttl_ms` is `stale`: it leaves rotation (no bus call, event or proxied
//! request goes to it) until it heartbeats again; after ten times that it is forgotten.
//!
//! `GET /api/v1/services` lists every module with its instances, each with its transport,
//! base URL, last heartbeat and health; it needs an admin's token or the shared secret.
//!
//! What a module subscribes to travels with its registration, so a process publishing an
//! event over HTTP knows which modules elsewhere want it. Until the subscriptions of every
//! module elsewhere are known (one of them has no instance registered yet), [`HttpEvents`]
//! refuses to forward events: they stay in the publisher's outbox and its relay sends them
//! again, so a module that starts late still gets every event it subscribes to.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{delete, get, post},
};
use banyan_bus::{
    BusError, Envelope, RemoteReply, Transport,
    http::{HttpTransport, Instances, Subscribers},
};
use banyan_kit::{ApiError, auth::Authenticator, extract::Json};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::topology::{MAIN, TopologyConfig, TransportKind};

/// Where the registry's routes live.
pub const SERVICES_PATH: &str = "/api/v1/services";

// ------------------------------------------------------------------------------ wire types

/// How an instance's modules are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceTransport {
    /// The main process's own modules: in process for the gateway.
    InProcess,
    Http,
    Nats,
}

impl From<TransportKind> for InstanceTransport {
    fn from(kind: TransportKind) -> Self {
        match kind {
            TransportKind::Http => InstanceTransport::Http,
            TransportKind::Nats => InstanceTransport::Nats,
        }
    }
}

/// What a process says about itself when it registers (and at every heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Unique per running process; chosen by it at start.
    pub instance_id: String,
    /// Its process name (`--process`).
    pub process: String,
    /// Where it serves HTTP (its `/api/v1/...` routes, and `/bus/v1/...` with HTTP).
    pub base_url: String,
    /// The modules it hosts.
    pub modules: Vec<RegisteredModule>,
}

/// One hosted module of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredModule {
    pub name: String,
    pub transport: InstanceTransport,
    /// The event subjects the module subscribes to.
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

/// `GET /api/v1/services`: every module, where it runs, and its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub modules: BTreeMap<String, ModuleListing>,
}

/// One module in the [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleListing {
    /// The process the topology places it in.
    pub process: String,
    /// How it is reached: `in_process` (the main process's), `http` or `nats`.
    pub transport: InstanceTransport,
    /// The event subjects it subscribes to; `null` until an instance has registered.
    pub subscriptions: Option<Vec<String>>,
    pub instances: Vec<InstanceView>,
}

/// One instance of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance_id: String,
    pub process: String,
    pub base_url: String,
    pub transport: InstanceTransport,
    /// Milliseconds since the epoch.
    pub registered_at_ms: i64,
    /// Milliseconds since the epoch.
    pub last_heartbeat_ms: i64,
    pub health: Health,
}

/// Whether an instance is in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Heard from within `topology.instance_ttl_ms`.
    Healthy,
    /// Not heard from since: out of rotation.
    Stale,
}

// ------------------------------------------------------------------------------ registry

/// The registry of the main process.
#[derive(Debug)]
pub(crate) struct Registry {
    topology: Arc<TopologyConfig>,
    /// Every module Banyan has.
    known: Vec<&'static str>,
    ttl: Duration,
    forget_after: Duration,
    state: RwLock<Table>,
    /// Round-robin cursors of the gateway, per module.
    cursors: Mutex<HashMap<String, Arc<AtomicUsize>>>,
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
            cursors: Mutex::default(),
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
        match reqwest::Url::parse(&registration.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            _ => {
                return Err(Refused::Invalid(
                    "base_url",
                    "must be an http:// or https:// URL".into(),
                ));
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
    pub(crate) fn remove(&self, instance_id: &str) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.own.as_deref() == Some(instance_id) {
            return false;
        }
        let removed = state.instances.remove(instance_id).is_some();
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

    /// The base URLs of `module`'s healthy instances.
    pub(crate) fn healthy(&self, module: &str) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .instances
            .iter()
            .filter(|(id, entry)| {
                entry.registration.modules.iter().any(|m| m.name == module)
                    && self.health(&state, id, entry) == Health::Healthy
            })
            .map(|(_, entry)| entry.registration.base_url.clone())
            .collect()
    }

    /// The healthy instances of `module`, starting with the next one in round robin.
    pub(crate) fn rotation(&self, module: &str) -> Vec<String> {
        let mut healthy = self.healthy(module);
        if healthy.len() > 1 {
            let cursor = self
                .cursors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(module.to_owned())
                .or_default()
                .clone();
            let first = cursor.fetch_add(1, Ordering::Relaxed) % healthy.len();
            healthy.rotate_left(first);
        }
        healthy
    }
}

impl Instances for Registry {
    fn instances(&self, module: &str) -> Vec<String> {
        self.healthy(module)
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

// ------------------------------------------------------------------------------ directory

/// What a process other than main knows of the others: the registry's last answer.
#[derive(Debug)]
pub(crate) struct Directory {
    /// The modules this process hosts.
    here: BTreeSet<&'static str>,
    /// Every module Banyan has.
    known: Vec<&'static str>,
    own_id: String,
    listing: RwLock<Option<Listing>>,
}

impl Directory {
    pub(crate) fn new(
        here: BTreeSet<&'static str>,
        known: Vec<&'static str>,
        own_id: String,
    ) -> Self {
        Self {
            here,
            known,
            own_id,
            listing: RwLock::default(),
        }
    }

    pub(crate) fn update(&self, listing: Listing) {
        *self.listing.write().unwrap_or_else(|e| e.into_inner()) = Some(listing);
    }
}

impl Instances for Directory {
    fn instances(&self, module: &str) -> Vec<String> {
        let listing = self.listing.read().unwrap_or_else(|e| e.into_inner());
        listing
            .as_ref()
            .and_then(|l| l.modules.get(module))
            .map(|m| {
                m.instances
                    .iter()
                    .filter(|i| i.health == Health::Healthy && i.instance_id != self.own_id)
                    .map(|i| i.base_url.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Directory {
    /// What module `m` subscribes to, if known.
    fn subscriptions<'l>(listing: Option<&'l Listing>, module: &str) -> Option<&'l Vec<String>> {
        listing
            .and_then(|l| l.modules.get(module))
            .and_then(|l| l.subscriptions.as_ref())
    }
}

impl Subscribers for Directory {
    /// The modules not hosted here known to subscribe to `subject`.
    fn modules_for(&self, subject: &str) -> Vec<String> {
        let listing = self.listing.read().unwrap_or_else(|e| e.into_inner());
        self.known
            .iter()
            .filter(|m| !self.here.contains(*m))
            .filter(|m| {
                Self::subscriptions(listing.as_ref(), m)
                    .is_some_and(|subjects| subjects.iter().any(|s| s == subject))
            })
            .map(|m| (*m).to_owned())
            .collect()
    }
}

impl Awareness for Directory {
    fn unknown(&self) -> Vec<String> {
        let listing = self.listing.read().unwrap_or_else(|e| e.into_inner());
        self.known
            .iter()
            .filter(|m| !self.here.contains(*m))
            .filter(|m| Self::subscriptions(listing.as_ref(), m).is_none())
            .map(|m| (*m).to_owned())
            .collect()
    }
}

// ------------------------------------------------------------------------------ events

/// Knows which modules elsewhere subscribe to what, and which it cannot tell yet.
pub(crate) trait Awareness: Subscribers {
    /// The modules hosted elsewhere whose subscriptions are not known yet.
    fn unknown(&self) -> Vec<String>;
}

/// The event side of the HTTP transport: forwards an event only once the subscriptions of
/// every module elsewhere are known, so that no module misses an event because it registered
/// late (nor gets one it does not subscribe to). Until then `publish` fails and the outbox
/// keeps the event for its relay.
pub(crate) struct HttpEvents {
    pub(crate) transport: Arc<HttpTransport>,
    pub(crate) awareness: Arc<dyn Awareness>,
}

impl std::fmt::Debug for HttpEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEvents").finish_non_exhaustive()
    }
}

impl Transport for HttpEvents {
    fn request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<RemoteReply, BusError>> {
        self.transport.request(envelope, body, deadline)
    }

    fn publish(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: uuid::Uuid,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        let unknown = self.awareness.unknown();
        if !unknown.is_empty() {
            let subject = envelope.subject;
            return Box::pin(async move {
                Err(BusError::Unavailable {
                    subject,
                    reason: format!(
                        "waiting for module(s) {} to register their subscriptions",
                        unknown.join(", ")
                    ),
                })
            });
        }
        self.transport.publish(envelope, json, aggregate)
    }
}

// ------------------------------------------------------------------------------ routes

/// What the registry's routes share.
#[derive(Clone)]
pub(crate) struct RegistryState {
    pub(crate) registry: Arc<Registry>,
    pub(crate) secret: Arc<str>,
}

impl std::fmt::Debug for RegistryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryState")
            .field("registry", &self.registry)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `POST /api/v1/services/register`, `DELETE /api/v1/services/{instance_id}` (the shared
/// secret) and `GET /api/v1/services` (an admin's token or the shared secret).
pub(crate) fn routes(state: RegistryState) -> Router {
    Router::new()
        .route(SERVICES_PATH, get(list))
        .route(&format!("{SERVICES_PATH}/register"), post(register))
        .route(&format!("{SERVICES_PATH}/{{instance_id}}"), delete(leave))
        .with_state(state)
}

/// Whether the request carries `authorization: Bearer <secret>` (compared in constant time).
pub(crate) fn carries_secret(headers: &HeaderMap, secret: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    match value.as_bytes().split_at_checked(7) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            !secret.is_empty() && same_bytes(token, secret.as_bytes())
        }
        _ => false,
    }
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn require_secret(headers: &HeaderMap, secret: &str) -> Result<(), ApiError> {
    if carries_secret(headers, secret) {
        Ok(())
    } else {
        tracing::warn!("Refused a registry call without the shared secret.");
        Err(ApiError::unauthorized(
            "this needs the processes' shared secret as a bearer token",
        ))
    }
}

async fn register(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Listing>, ApiError> {
    require_secret(&headers, &state.secret)?;
    let registration: Registration = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("not a registration: {e}"),
        )
    })?;
    state.registry.register(registration)?;
    Ok(Json(state.registry.listing()))
}

async fn leave(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Path(instance_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_secret(&headers, &state.secret)?;
    if state.registry.remove(&instance_id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no instance {instance_id} is registered"
        )))
    }
}

async fn list(
    State(state): State<RegistryState>,
    Extension(auth): Extension<Arc<Authenticator>>,
    headers: HeaderMap,
) -> Result<Json<Listing>, ApiError> {
    if !carries_secret(&headers, &state.secret) {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("this needs an admin's token or the shared secret")
            })?;
        auth.verify(token.trim())?.require_admin()?;
    }
    Ok(Json(state.registry.listing()))
}

// ------------------------------------------------------------------------------ heartbeat

/// A process other than main: registers, heartbeats, keeps its [`Directory`] fresh, leaves.
pub(crate) struct Heartbeat {
    pub(crate) client: reqwest::Client,
    pub(crate) registry_url: String,
    pub(crate) secret: Arc<str>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) period: Duration,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("registry_url", &self.registry_url)
            .field("secret", &"<redacted>")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.registry_url.trim_end_matches('/'))
    }

    /// Registers once; the registry answers with the listing.
    async fn beat(&self, registration: &Registration) -> Result<Listing, String> {
        let response = self
            .client
            .post(self.url(&format!("{SERVICES_PATH}/register")))
            .bearer_auth(&*self.secret)
            .json(registration)
            .timeout(self.period.max(Duration::from_secs(2)))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("the registry answered {status}: {body}"));
        }
        response
            .json::<Listing>()
            .await
            .map_err(|e| format!("the registry's answer is unreadable: {e}"))
    }

    /// Heartbeats until `stop` is cancelled.
    pub(crate) async fn run(self: Arc<Self>, registration: Registration, stop: CancellationToken) {
        let mut registered = false;
        let mut failing = false;
        loop {
            match self.beat(&registration).await {
                Ok(listing) => {
                    self.directory.update(listing);
                    if !registered {
                        tracing::info!(instance_id = %registration.instance_id, registry = %self.registry_url, "Registered with the registry.");
                    } else if failing {
                        tracing::info!("The registry answers again.");
                    }
                    registered = true;
                    failing = false;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(registry = %self.registry_url, %error, "Cannot register with the registry; retrying every heartbeat.");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.period) => {}
            }
        }
    }

    /// Tells the registry this instance leaves (graceful shutdown); gives up after 2 s.
    pub(crate) async fn leave(&self, instance_id: &str) {
        let sent = self
            .client
            .delete(self.url(&format!("{SERVICES_PATH}/{instance_id}")))
            .bearer_auth(&*self.secret)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(instance_id, "Left the registry.");
            }
            Ok(response) => {
                tracing::warn!(instance_id, status = %response.status(), "The registry did not take the leave.");
            }
            Err(error) => {
                tracing::warn!(instance_id, %error, "Could not tell the registry this instance leaves.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Placement;

    fn topology() -> Arc<TopologyConfig> {
        let mut topology = TopologyConfig::default();
        topology.modules.insert(
            "payments".into(),
            Placement {
                process: "payments".into(),
                transport: TransportKind::Http,
            },
        );
        topology.instance_ttl_ms = 50;
        topology.heartbeat_ms = 10;
        Arc::new(topology)
    }

    fn payments(id: &str, url: &str) -> Registration {
        Registration {
            instance_id: id.into(),
            process: "payments".into(),
            base_url: url.into(),
            modules: vec![RegisteredModule {
                name: "payments".into(),
                transport: InstanceTransport::Http,
                subscriptions: vec!["orders.order_placed.v1".into()],
            }],
        }
    }

    #[test]
    fn instances_rotate_and_leave_rotation_when_silent() {
        let registry = Registry::new(topology(), vec!["orders", "payments"]);
        assert_eq!(registry.unknown(), ["payments"]);
        assert!(registry.modules_for("orders.order_placed.v1").is_empty());
        registry.register(payments("a", "http://a:1")).unwrap();
        assert!(registry.unknown().is_empty());
        registry.register(payments("b", "http://b:1")).unwrap();
        assert_eq!(registry.modules_for("orders.order_placed.v1"), ["payments"]);
        assert!(registry.modules_for("orders.whatever.v1").is_empty());
        let firsts: BTreeSet<String> = (0..4)
            .map(|_| registry.rotation("payments")[0].clone())
            .collect();
        assert_eq!(firsts.len(), 2, "round robin over both");

        std::thread::sleep(Duration::from_millis(80));
        registry.register(payments("b", "http://b:1")).unwrap();
        assert_eq!(registry.healthy("payments"), ["http://b:1"]);
        let listing = registry.listing();
        let health: Vec<Health> = listing.modules["payments"]
            .instances
            .iter()
            .map(|i| i.health)
            .collect();
        assert_eq!(health, [Health::Stale, Health::Healthy]);
        assert!(registry.remove("b"));
        assert!(registry.healthy("payments").is_empty());
        // What payments wants is remembered when its instances are gone.
        assert!(registry.unknown().is_empty());
        assert_eq!(registry.modules_for("orders.order_placed.v1"), ["payments"]);
    }

    #[test]
    fn a_module_of_another_process_is_refused() {
        let registry = Registry::new(topology(), vec!["orders", "payments"]);
        let mut wrong = payments("a", "http://a:1");
        wrong.modules[0].name = "orders".into();
        assert!(matches!(
            registry.register(wrong),
            Err(Refused::Conflict(_))
        ));
        let mut wrong = payments("a", "not a url");
        wrong.modules.clear();
        assert!(matches!(
            registry.register(wrong),
            Err(Refused::Invalid("base_url", _))
        ));
    }

    #[test]
    fn a_directory_follows_the_listing() {
        let registry = Registry::new(topology(), vec!["orders", "payments"]);
        registry.register_own(Registration {
            instance_id: "main".into(),
            process: MAIN.into(),
            base_url: "http://main:1".into(),
            modules: vec![RegisteredModule {
                name: "orders".into(),
                transport: InstanceTransport::InProcess,
                subscriptions: vec!["payments.payment_completed.v1".into()],
            }],
        });
        let directory = Directory::new(
            ["payments"].into_iter().collect(),
            vec!["orders", "payments"],
            "me".into(),
        );
        // Nothing known yet: events wait.
        assert_eq!(directory.unknown(), ["orders"]);
        assert!(directory.instances("orders").is_empty());
        directory.update(registry.listing());
        assert!(directory.unknown().is_empty());
        assert!(
            directory
                .modules_for("payments.payment_failed.v1")
                .is_empty()
        );
        assert_eq!(
            directory.modules_for("payments.payment_completed.v1"),
            ["orders"]
        );
        assert_eq!(directory.instances("orders"), ["http://main:1"]);
    }
}
