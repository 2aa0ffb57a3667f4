//! Fault injection, for tests and demonstrations: make a module's handlers (or those of one
//! subject) slow, or failing at a rate, in whichever process hosts them.
//!
//! `[bus.faults.payments] delay_ms = 5000` makes every payments handler in every process of
//! the topology wait 5 s before it runs; `[bus.faults."payments.get_payment.v1"] error_rate =
//! 1.0` makes that one fail. A fault sits where the handler runs, inside its deadline, so a
//! slowed handler is stopped by its caller's deadline as a slow one would be.
//! `commit_delay_ms` holds each of the module's write transactions open, its writes made,
//! before it commits: the slow write whose caller gives up, which must then roll back. Off
//! unless configured: nothing in the shipped configuration sets one.

use std::{collections::BTreeMap, time::Duration};

use banyan_message::module_of;
use serde::{Deserialize, Serialize};

use crate::BusError;

/// What to do to the handlers of a module or subject.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fault {
    /// Wait this long before running the handler.
    pub delay_ms: u64,
    /// Then fail this share of calls (0.0 to 1.0) as unavailable.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub error_rate: f64,
    /// Hold each write transaction of the module this long after its writes, before it
    /// commits (a fault of a module, not of one subject: transactions have no subject).
    pub commit_delay_ms: u64,
}

impl Fault {
    /// Applies the fault to one call of `subject`'s handler: waits, then fails it or not.
    pub async fn strike(&self, subject: &str) -> Result<(), BusError> {
        if self.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        }
        if self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
            return Err(BusError::Unavailable {
                subject: subject.to_owned(),
                reason: "a fault was injected (bus.faults)".into(),
            });
        }
        Ok(())
    }

    /// Holds a transaction open before its commit, as `commit_delay_ms` says.
    pub(crate) async fn hold_commit(&self) {
        if self.commit_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.commit_delay_ms)).await;
        }
    }
}

/// The faults of a process, by module or subject: the configured ones, changed at run time
/// through [`Bus::set_fault`](crate::Bus::set_fault) when the app allows it.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Whether any fault is set: the one load a handler pays when none is.
    any: std::sync::atomic::AtomicBool,
    by_target: std::sync::RwLock<BTreeMap<String, Fault>>,
}

impl Faults {
    pub(crate) fn new(faults: &BTreeMap<String, Fault>) -> Self {
        Self {
            any: (!faults.is_empty()).into(),
            by_target: std::sync::RwLock::new(faults.clone()),
        }
    }

    /// The fault of `subject`'s handler (or of a module's routes, `subject` being the
    /// module's name): its own, else its module's.
    pub(crate) fn of(&self, subject: &str) -> Option<Fault> {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let faults = crate::lock::read(&self.by_target);
        faults
            .get(subject)
            .or_else(|| faults.get(module_of(subject)))
            .copied()
    }

    /// Sets (or with `None` clears) the fault of `target`.
    pub(crate) fn set(&self, target: &str, fault: Option<Fault>) {
        let mut faults = crate::lock::write(&self.by_target);
        match fault {
            Some(fault) => faults.insert(target.to_owned(), fault),
            None => faults.remove(target),
        };
        self.any
            .store(!faults.is_empty(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Every fault set now.
    pub(crate) fn all(&self) -> BTreeMap<String, Fault> {
        crate::lock::read(&self.by_target).clone()
    }

    pub(crate) fn validate(faults: &BTreeMap<String, Fault>) -> Result<(), (String, String)> {
        for (target, fault) in faults {
            if !(0.0..=1.0).contains(&fault.error_rate) {
                return Err((
                    format!("bus.faults.\"{target}\".error_rate"),
                    "must be between 0.0 and 1.0".into(),
                ));
            }
        }
        Ok(())
    }
}
