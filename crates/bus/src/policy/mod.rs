//! Edge policies: how a request from one module to another is protected, the same whether the
//! callee runs in this process or in another.
//!
//! An edge is a caller module and a callee (a module, or one subject of it). Its policy is the
//! default `[bus.policy]` with the overrides of `[bus.edges]` laid over it, most specific last:
//! `"<callee module>"`, `"<subject>"`, `"<caller>-><callee module>"`, `"<caller>-><subject>"`.
//! Every request the bus sends goes through its edge ([`Edge::call`]):
//!
//! 1. a **bulkhead** (a concurrency cap with a bounded wait) turns excess callers away at once
//!    (`BusError::Overloaded`) instead of letting them queue without bound;
//! 2. a **circuit breaker** answers at once while open (`BusError::CircuitOpen`, with how long
//!    until it probes), so callers of a failing callee fail fast and the callee gets no calls;
//! 3. a **deadline**: the edge's timeout, cut to what the caller's own context has left, travels
//!    with the call; the callee's handler runs in a context with that deadline and is stopped
//!    when it passes;
//! 4. **retries** with exponential backoff and full jitter, for idempotent requests only
//!    ([`Request::IDEMPOTENT`]) and only on errors that say the callee may not have run, drawn
//!    from a retry budget (tower's `TpsBudget`), so a callee that fails every call gets at most
//!    the budget's share of extra calls, never `attempts` times the load.
//!
//! Named here, once; the transports know nothing of it.
//!
//! [`Request::IDEMPOTENT`]: banyan_message::Request::IDEMPOTENT

mod breaker;
mod fault;

pub use breaker::{Breaker, BreakerConfig, BreakerState, Outcome, Pass};
pub use fault::Fault;
pub(crate) use fault::Faults;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use banyan_message::module_of;
use serde::{Deserialize, Serialize};
use tokio::{sync::Semaphore, time::Instant};
use tower::retry::budget::{Budget, TpsBudget};

use crate::{
    Backoff, BusError,
    lock::{read, write},
    meters::RouteMeters,
};

/// The policy of an edge (`[bus.policy]` for every edge, `[bus.edges."<edge>"]` overrides).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgePolicy {
    /// The deadline of a call on this edge; `bus.request_timeout_ms` when absent. A caller's
    /// own deadline (its route's timeout, or what its caller left it) is never extended.
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    pub bulkhead: BulkheadPolicy,
}

/// Retries of idempotent requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub attempts: u32,
    /// The pause before retry n is random between 0 and `base` × 2ⁿ⁻¹, capped at `max`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Retries may add at most this share of the edge's calls (over the last 10 s)...
    pub budget_percent: u32,
    /// ...plus this many per second, so a quiet edge can still retry.
    pub budget_min_per_sec: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            backoff_base_ms: 20,
            backoff_max_ms: 500,
            budget_percent: 20,
            budget_min_per_sec: 10,
        }
    }
}

/// The concurrency cap of an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkheadPolicy {
    /// Calls on this edge at once.
    pub max_concurrent: u32,
    /// How long a call beyond the cap may wait for a slot before it is turned away.
    pub max_wait_ms: u64,
}

impl Default for BulkheadPolicy {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_wait_ms: 50,
        }
    }
}

impl EdgePolicy {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.timeout_ms == Some(0) {
            return Err(("timeout_ms", "must be greater than 0".into()));
        }
        if self.retry.budget_percent > 1_000 {
            return Err(("retry.budget_percent", "must be at most 1000".into()));
        }
        if self.retry.budget_min_per_sec > 1_000_000 {
            return Err(("retry.budget_min_per_sec", "must be at most 1000000".into()));
        }
        if self.retry.backoff_base_ms > self.retry.backoff_max_ms {
            return Err((
                "retry.backoff_base_ms",
                "must not exceed retry.backoff_max_ms".into(),
            ));
        }
        if self.bulkhead.max_concurrent == 0 {
            return Err(("bulkhead.max_concurrent", "must be greater than 0".into()));
        }
        self.breaker.validate()
    }
}

/// The policies of every edge of a process, and each edge's live state (its breaker, its
/// bulkhead's slots, its retry budget), made the first time the edge is used.
pub(crate) struct Policies {
    default: serde_json::Value,
    overrides: BTreeMap<String, serde_json::Value>,
    request_timeout: Duration,
    /// By (caller, subject): the edge that call goes through, and its meters.
    routes: RwLock<HashMap<(&'static str, &'static str), Arc<Route>>>,
    /// By name: several subjects of one callee share their module's edge.
    edges: RwLock<BTreeMap<String, Arc<Edge>>>,
}

impl Policies {
    pub(crate) fn new(
        default: &EdgePolicy,
        overrides: &BTreeMap<String, serde_json::Value>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            default: serde_json::to_value(default).unwrap_or_default(),
            overrides: overrides.clone(),
            request_timeout,
            routes: RwLock::default(),
            edges: RwLock::default(),
        }
    }

    /// Checks the default and every override, naming the first bad key.
    pub(crate) fn validate(
        default: &EdgePolicy,
        overrides: &BTreeMap<String, serde_json::Value>,
    ) -> Result<(), (String, String)> {
        default
            .validate()
            .map_err(|(key, reason)| (format!("bus.policy.{key}"), reason))?;
        let policies = Self::new(default, overrides, Duration::from_secs(1));
        for key in overrides.keys() {
            let named = |reason: String| (format!("bus.edges.\"{key}\""), reason);
            let (caller, callee) = key.split_once("->").unwrap_or(("", key));
            if callee.is_empty()
                || callee.contains("->")
                || (key.contains("->") && caller.is_empty())
            {
                return Err(named(
                    "an edge is `<callee>` or `<caller>-><callee>`, the callee a module or a subject"
                        .into(),
                ));
            }
            let policy = policies.resolve(caller, callee).map_err(named)?;
            policy
                .validate()
                .map_err(|(field, reason)| (format!("bus.edges.\"{key}\".{field}"), reason))?;
        }
        Ok(())
    }

    /// The route of a request of `caller` on `subject`: its edge and its meters, found with
    /// one lookup on every call.
    pub(crate) fn route(&self, caller: &'static str, subject: &'static str) -> Arc<Route> {
        if let Some(route) = read(&self.routes).get(&(caller, subject)) {
            return route.clone();
        }
        let module = module_of(subject);
        let by_subject = [subject.to_owned(), format!("{caller}->{subject}")]
            .iter()
            .any(|key| self.overrides.contains_key(key));
        let name = if by_subject {
            format!("{caller}->{subject}")
        } else {
            format!("{caller}->{module}")
        };
        let edge = write(&self.edges)
            .entry(name.clone())
            .or_insert_with(|| {
                // Checked at start-up (`validate`); the default if something slipped through.
                let policy = self.resolve(caller, subject).unwrap_or_else(|reason| {
                    tracing::error!(edge = %name, %reason, "Bad edge policy; using the default.");
                    EdgePolicy::default()
                });
                Arc::new(Edge::new(name, policy, self.request_timeout))
            })
            .clone();
        write(&self.routes)
            .entry((caller, subject))
            .or_insert_with(|| {
                Arc::new(Route {
                    edge,
                    meters: RouteMeters::new(caller, subject),
                })
            })
            .clone()
    }

    #[cfg(test)]
    fn edge(&self, caller: &'static str, subject: &'static str) -> Arc<Edge> {
        self.route(caller, subject).edge.clone()
    }

    /// Every edge used so far, by name.
    pub(crate) fn edges(&self) -> Vec<Arc<Edge>> {
        read(&self.edges).values().cloned().collect()
    }

    /// The policy of `caller` → `callee` (a module or a subject): the default with each
    /// matching override laid over it, most specific last.
    fn resolve(&self, caller: &str, callee: &str) -> Result<EdgePolicy, String> {
        let module = module_of(callee);
        let mut keys = vec![module.to_owned()];
        if callee != module {
            keys.push(callee.to_owned());
        }
        if !caller.is_empty() {
            keys.push(format!("{caller}->{module}"));
            if callee != module {
                keys.push(format!("{caller}->{callee}"));
            }
        }
        let mut policy = self.default.clone();
        for key in keys {
            if let Some(layer) = self.overrides.get(&key) {
                merge(&mut policy, layer);
            }
        }
        serde_json::from_value(policy).map_err(|e| e.to_string())
    }
}

/// Lays `layer` over `base`, table by table.
fn merge(base: &mut serde_json::Value, layer: &serde_json::Value) {
    match (base, layer) {
        (serde_json::Value::Object(base), serde_json::Value::Object(layer)) => {
            for (key, value) in layer {
                merge(
                    base.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
        (base, layer) => *base = layer.clone(),
    }
}

/// One edge: its policy and its live state.
/// What one caller's requests on one subject go through: the edge (shared by the subjects of
/// a callee unless an override names the subject) and the route's own meters.
pub(crate) struct Route {
    pub(crate) edge: Arc<Edge>,
    pub(crate) meters: RouteMeters,
}

pub(crate) struct Edge {
    name: String,
    policy: EdgePolicy,
    timeout: Duration,
    breaker: Arc<Breaker>,
    slots: Semaphore,
    budget: TpsBudget,
    backoff: Backoff,
}

/// What `GET /api/v1/services` and the logs show of an edge.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeState {
    pub edge: String,
    pub breaker: BreakerState,
    pub in_flight: u32,
    pub max_concurrent: u32,
}

impl Edge {
    fn new(name: String, policy: EdgePolicy, request_timeout: Duration) -> Self {
        let retry = &policy.retry;
        Self {
            timeout: policy
                .timeout_ms
                .map_or(request_timeout, Duration::from_millis),
            breaker: Breaker::new(policy.breaker.clone()),
            slots: Semaphore::new(policy.bulkhead.max_concurrent as usize),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                retry.budget_min_per_sec,
                retry.budget_percent as f32 / 100.0,
            ),
            backoff: Backoff::new(
                Duration::from_millis(retry.backoff_base_ms),
                Duration::from_millis(retry.backoff_max_ms),
            ),
            name,
            policy,
        }
    }

    #[cfg(test)]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The edge's own deadline for a call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn state(&self) -> EdgeState {
        let max = self.policy.bulkhead.max_concurrent;
        EdgeState {
            edge: self.name.clone(),
            breaker: self.breaker.state(),
            in_flight: max.saturating_sub(self.slots.available_permits() as u32),
            max_concurrent: max,
        }
    }

    /// Runs `attempt` (one try of the call, given what is left of its deadline and the instant
    /// it passes) under this edge's bulkhead, breaker and retries; `idempotent` says whether
    /// it may run twice. `budget` is the call's whole deadline.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        subject: &str,
        idempotent: bool,
        budget: Duration,
        attempt: F,
    ) -> Result<T, BusError>
    where
        F: FnMut(Duration, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<T, BusError>>,
    {
        // A timeout names the call's whole deadline, not what its last attempt had left.
        self.attempts(subject, idempotent, budget, attempt)
            .await
            .map_err(|error| match error {
                BusError::Timeout { subject, .. } => BusError::Timeout {
                    subject,
                    after: budget,
                },
                other => other,
            })
    }

    async fn attempts<T, F, Fut>(
        &self,
        subject: &str,
        idempotent: bool,
        budget: Duration,
        mut attempt: F,
    ) -> Result<T, BusError>
    where
        F: FnMut(Duration, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<T, BusError>>,
    {
        // The clock is read once before each attempt and once after: a call in process
        // takes well under a microsecond, and each reading is a few percent of that.
        let mut now = Instant::now();
        let give_up_at = now + budget;
        let overloaded = || BusError::Overloaded {
            subject: subject.to_owned(),
            reason: format!(
                "{} calls on edge {} are in flight already",
                self.policy.bulkhead.max_concurrent, self.name
            ),
        };
        let _slot = match self.slots.try_acquire() {
            Ok(slot) => slot,
            // No wait allowed: turned away now, not at the timer's next tick (a millisecond).
            Err(_) if self.policy.bulkhead.max_wait_ms == 0 => return Err(overloaded()),
            Err(_) => {
                let wait = Duration::from_millis(self.policy.bulkhead.max_wait_ms);
                tokio::time::timeout(wait, self.slots.acquire())
                    .await
                    .map_err(|_| overloaded())?
                    .map_err(|_| overloaded())?
            }
        };
        // The budget is a share of the calls that could be retried: only those deposit.
        if idempotent {
            self.budget.deposit();
        }
        let mut retries = 0;
        loop {
            let pass = self
                .breaker
                .admit_at(now)
                .map_err(|retry_after| BusError::CircuitOpen {
                    subject: subject.to_owned(),
                    retry_after,
                })?;
            let started = now;
            let remaining = give_up_at.saturating_duration_since(started);
            if remaining.is_zero() {
                return Err(BusError::Timeout {
                    subject: subject.to_owned(),
                    after: budget,
                });
            }
            let result = attempt(remaining, give_up_at).await;
            now = Instant::now();
            let slow = now - started >= Duration::from_millis(self.policy.breaker.slow_call_ms);
            match &result {
                // Not a call the callee answered: it says nothing of the callee's health.
                Err(BusError::NoHandler { .. }) => drop(pass),
                Err(error) => pass.report_at(
                    now,
                    Outcome {
                        failed: counts_as_failure(error),
                        slow,
                    },
                ),
                Ok(_) => pass.report_at(
                    now,
                    Outcome {
                        failed: false,
                        slow,
                    },
                ),
            }
            let Err(error) = &result else {
                return result;
            };
            let worth_retrying =
                idempotent && retries < self.policy.retry.attempts && may_pass_on_retry(error);
            if !worth_retrying {
                return result;
            }
            retries += 1;
            let pause = self.backoff.full_jitter(retries);
            if now + pause >= give_up_at || !self.budget.withdraw() {
                return result;
            }
            tracing::debug!(edge = %self.name, subject, retries, ?pause, %error, "Retrying.");
            tokio::time::sleep(pause).await;
            now = Instant::now();
        }
    }
}

/// Whether trying again might succeed: the callee could not be reached or answered in time,
/// or it failed for a reason of its own (its database, say). Never a domain rejection, and
/// never the caller's own edge turning the call away.
fn may_pass_on_retry(error: &BusError) -> bool {
    match error {
        BusError::Unavailable { .. } | BusError::Timeout { .. } => true,
        BusError::Rejected(rejection) => rejection.kind == banyan_message::RejectionKind::Internal,
        _ => false,
    }
}

/// Whether an error counts against the callee's health: it did not answer, or answered that
/// it failed. A domain rejection (`insufficient_stock`, `not_found`) is a healthy answer.
fn counts_as_failure(error: &BusError) -> bool {
    match error {
        BusError::Rejected(rejection) => rejection.kind == banyan_message::RejectionKind::Internal,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn overrides(toml: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_value(toml).unwrap()
    }

    #[test]
    fn overrides_are_laid_over_the_default_most_specific_last() {
        let policies = Policies::new(
            &EdgePolicy::default(),
            &overrides(serde_json::json!({
                "payments": { "timeout_ms": 3000, "breaker": { "open_ms": 100 } },
                "orders->payments": { "timeout_ms": 1000 },
                "payments.get_payment.v1": { "retry": { "attempts": 0 } },
            })),
            Duration::from_secs(5),
        );
        let from_orders = policies
            .resolve("orders", "payments.get_payment.v1")
            .unwrap();
        assert_eq!(from_orders.timeout_ms, Some(1000));
        assert_eq!(from_orders.breaker.open_ms, 100);
        assert_eq!(from_orders.retry.attempts, 0);
        assert_eq!(from_orders.breaker.window, BreakerConfig::default().window);
        let from_users = policies.resolve("users", "payments").unwrap();
        assert_eq!(from_users.timeout_ms, Some(3000));
        assert_eq!(from_users.retry.attempts, 2);

        let edge = policies.edge("orders", "payments.get_payment.v1");
        assert_eq!(edge.name(), "orders->payments.get_payment.v1");
        assert_eq!(edge.timeout(), Duration::from_millis(1000));
        assert_eq!(
            policies.edge("users", "cart.get_cart.v1").name(),
            "users->cart"
        );
        assert_eq!(
            policies.edge("users", "cart.get_cart.v1").timeout(),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_bad_override_is_named_by_its_key() {
        let bad = |value: serde_json::Value| {
            Policies::validate(&EdgePolicy::default(), &overrides(value))
                .unwrap_err()
                .0
        };
        assert_eq!(
            bad(serde_json::json!({ "orders->payments": { "breaker": { "window": 0 } } })),
            "bus.edges.\"orders->payments\".breaker.window"
        );
        assert_eq!(
            bad(serde_json::json!({ "payments": { "retries": 3 } })),
            "bus.edges.\"payments\""
        );
        assert_eq!(
            bad(serde_json::json!({ "->payments": {} })),
            "bus.edges.\"->payments\""
        );
    }
}
