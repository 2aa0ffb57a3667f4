//! The bus's settings.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    backoff::Backoff,
    policy::{EdgePolicy, Fault, Faults, Policies},
};

use serde::Deserialize;

/// Tunables of the bus, its queues and its reliable-delivery machinery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Deadline of a `request` unless the caller gives one.
    pub request_timeout_ms: u64,
    /// How many requests of one kind may run at once; further callers wait their turn.
    pub request_concurrency: usize,
    /// Workers per subscribing module. Events of one aggregate always go to the same worker,
    /// so they are handled in order.
    pub event_partitions: usize,
    /// Events that may wait in one worker's queue before publishers wait (or, for events from
    /// an outbox, before the event is left to the relay).
    pub event_queue: usize,
    /// Events a worker handles in one transaction when that many wait in its queue (group
    /// commit, ADR 0007); 1 gives every event a transaction of its own.
    pub event_batch: usize,
    /// Attempts before an event goes to dead letters.
    pub max_attempts: u32,
    /// First retry delay; each retry doubles it, with jitter, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How often the relay looks for events whose delivery did not complete.
    pub relay_interval_ms: u64,
    /// How long a delivery may take before the relay sends the event again.
    pub relay_lease_ms: u64,
    /// Events the relay takes per pass.
    pub relay_batch: usize,
    /// How long shutdown waits for in-flight work.
    pub drain_timeout_ms: u64,
    /// Chaos: deliver every event twice to every subscriber, to show that each effect still
    /// happens once. Off in production; tests and chaos runs turn it on.
    pub chaos_duplicate_deliveries: bool,
    /// The policy of every edge (caller module → callee) unless overridden: deadline,
    /// retries, circuit breaker, bulkhead (see the `policy` module).
    pub policy: EdgePolicy,
    /// Overrides of `policy` per edge: `"payments"`, `"payments.get_payment.v1"`,
    /// `"orders->payments"`, `"orders->payments.get_payment.v1"`, each a partial policy.
    pub edges: BTreeMap<String, serde_json::Value>,
    /// Faults injected into handlers, by module or subject (tests and demonstrations only).
    pub faults: BTreeMap<String, Fault>,
    /// Whether admins may set and clear faults while the process runs
    /// (`PUT /api/v1/admin/faults/{target}`): tests and demonstrations only, off by default.
    pub fault_api: bool,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 5_000,
            request_concurrency: 256,
            event_partitions: 8,
            event_queue: 1_024,
            event_batch: 64,
            max_attempts: 5,
            backoff_base_ms: 50,
            backoff_max_ms: 5_000,
            relay_interval_ms: 500,
            relay_lease_ms: 30_000,
            relay_batch: 256,
            drain_timeout_ms: 10_000,
            chaos_duplicate_deliveries: false,
            policy: EdgePolicy::default(),
            edges: BTreeMap::new(),
            faults: BTreeMap::new(),
            fault_api: false,
        }
    }
}

impl BusConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The delay before retry number `attempt` (1-based): exponential with full jitter, so
    /// that many failing consumers do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(
            Duration::from_millis(self.backoff_base_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
        .delay(attempt)
    }

    /// Checks the values, naming the first bad key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.validate_tunables()
            .map_err(|(key, reason)| (key.to_owned(), reason))?;
        Policies::validate(&self.policy, &self.edges)?;
        Faults::validate(&self.faults)
    }

    fn validate_tunables(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("bus.request_timeout_ms", self.request_timeout_ms),
            ("bus.request_concurrency", self.request_concurrency as u64),
            ("bus.event_partitions", self.event_partitions as u64),
            ("bus.event_queue", self.event_queue as u64),
            ("bus.event_batch", self.event_batch as u64),
            ("bus.max_attempts", u64::from(self.max_attempts)),
            ("bus.relay_interval_ms", self.relay_interval_ms),
            ("bus.relay_lease_ms", self.relay_lease_ms),
            ("bus.relay_batch", self.relay_batch as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return Err((
                "bus.backoff_base_ms",
                "must not exceed bus.backoff_max_ms".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let config = BusConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..BusConfig::default()
        };
        for attempt in 1..40 {
            let delay = config.backoff(attempt);
            assert!(delay <= Duration::from_millis(1_000), "{delay:?}");
        }
        assert!(config.backoff(1) <= Duration::from_millis(100));
        assert!(config.backoff(10) >= Duration::from_millis(500));
    }
}
