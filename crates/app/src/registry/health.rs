//! Health of the registered instances, beyond their heartbeats: main checks each instance's
//! `/health` itself (a heartbeat only says the process runs, a check says it answers), with
//! hysteresis, and ejects an instance whose proxied requests keep failing.
//!
//! An instance is `starting` until `healthy_after` checks in a row pass, `unhealthy` after
//! `unhealthy_after` in a row fail (a frozen process fails by timing out), and healthy again
//! after `healthy_after` passes. Separately, `eject_after` failed proxied requests in a row
//! (5xx, or no answer) eject it for `eject_base_ms`, doubled at each ejection up to
//! `eject_max_ms`; the last instance of a module in rotation is never ejected (a degraded
//! answer beats none). Only instances in state `healthy` and not ejected are in rotation.

use std::time::{Duration, Instant};

use super::Health;
use crate::topology::HealthConfig;

/// What the checks and the proxied requests have shown of one instance.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    state: Checked,
    passes: u32,
    fails: u32,
    proxied_fails: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Checked {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl Probe {
    /// One active check's result.
    pub(crate) fn checked(&mut self, passed: bool, config: &HealthConfig) {
        if passed {
            self.passes += 1;
            self.fails = 0;
            if self.state != Checked::Healthy && self.passes >= config.healthy_after {
                self.state = Checked::Healthy;
            }
        } else {
            self.fails += 1;
            self.passes = 0;
            if self.state == Checked::Healthy && self.fails >= config.unhealthy_after {
                self.state = Checked::Unhealthy;
            }
        }
    }

    /// One proxied request's result; `may_eject` is false for the last instance in rotation.
    /// Whether this ejected it.
    pub(crate) fn proxied(&mut self, ok: bool, may_eject: bool, config: &HealthConfig) -> bool {
        if ok {
            self.proxied_fails = 0;
            return false;
        }
        self.proxied_fails += 1;
        if config.eject_after == 0 || self.proxied_fails < config.eject_after || !may_eject {
            return false;
        }
        let factor = 1u64 << self.ejections.min(16);
        let length = config
            .eject_base_ms
            .saturating_mul(factor)
            .min(config.eject_max_ms);
        self.ejections += 1;
        self.proxied_fails = 0;
        self.ejected_until = Some(Instant::now() + Duration::from_millis(length));
        true
    }

    /// Whether its last proxied request, if any, did not fail (a success changes nothing).
    pub(crate) fn no_failed_requests(&self) -> bool {
        self.proxied_fails == 0
    }

    pub(crate) fn ejected(&self) -> bool {
        self.ejected_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Its health as far as checks and ejection go (heartbeats are the registry's part).
    pub(crate) fn health(&self) -> Health {
        match self.state {
            Checked::Starting => Health::Starting,
            Checked::Unhealthy => Health::Unhealthy,
            Checked::Healthy if self.ejected() => Health::Ejected,
            Checked::Healthy => Health::Healthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_move_an_instance_with_hysteresis() {
        let config = HealthConfig {
            unhealthy_after: 2,
            healthy_after: 2,
            ..HealthConfig::default()
        };
        let mut probe = Probe::default();
        assert_eq!(probe.health(), Health::Starting);
        probe.checked(true, &config);
        assert_eq!(probe.health(), Health::Starting, "one pass is not enough");
        probe.checked(true, &config);
        assert_eq!(probe.health(), Health::Healthy);
        probe.checked(false, &config);
        assert_eq!(probe.health(), Health::Healthy, "one failure is not enough");
        probe.checked(true, &config);
        probe.checked(false, &config);
        assert_eq!(probe.health(), Health::Healthy, "failures must be in a row");
        probe.checked(false, &config);
        assert_eq!(probe.health(), Health::Unhealthy);
        probe.checked(true, &config);
        assert_eq!(probe.health(), Health::Unhealthy);
        probe.checked(true, &config);
        assert_eq!(probe.health(), Health::Healthy);
    }

    #[test]
    fn failing_requests_eject_for_longer_each_time_but_never_the_last_instance() {
        let config = HealthConfig {
            eject_after: 3,
            eject_base_ms: 1_000,
            eject_max_ms: 3_000,
            ..HealthConfig::default()
        };
        let mut probe = Probe::default();
        probe.checked(true, &config);
        for _ in 0..5 {
            assert!(!probe.proxied(false, false, &config), "the last one stays");
        }
        assert_eq!(probe.health(), Health::Healthy);
        probe.proxied(false, true, &config);
        probe.proxied(true, true, &config);
        probe.proxied(false, true, &config);
        assert!(
            !probe.proxied(false, true, &config),
            "failures must be in a row"
        );
        assert!(probe.proxied(false, true, &config));
        assert_eq!(probe.health(), Health::Ejected);
        let first = probe.ejected_until.unwrap_or_else(Instant::now);
        probe.ejected_until = None;
        for _ in 0..3 {
            probe.proxied(false, true, &config);
        }
        let second = probe.ejected_until.unwrap_or_else(Instant::now);
        assert!(second > first + Duration::from_millis(900), "doubled");
        for _ in 0..30 {
            probe.proxied(false, true, &config);
        }
        let capped = probe.ejected_until.unwrap_or_else(Instant::now);
        assert!(
            capped <= Instant::now() + Duration::from_millis(3_000),
            "capped"
        );
    }
}
