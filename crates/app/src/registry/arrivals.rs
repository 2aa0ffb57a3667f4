//! Which modules elsewhere have an instance in rotation, and what is done when one comes
//! (back): the events waiting for it in this process's outboxes are sent at once, not when
//! their leases lapse.

use std::{collections::BTreeSet, sync::Mutex};

/// The modules elsewhere last seen in rotation, and what to do when one joins them.
pub(crate) struct Arrivals {
    in_rotation: Mutex<BTreeSet<String>>,
    on_arrival: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Arrivals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrivals")
            .field("in_rotation", &self.in_rotation)
            .finish_non_exhaustive()
    }
}

impl Default for Arrivals {
    fn default() -> Self {
        Self::new(|| {})
    }
}

impl Arrivals {
    pub(crate) fn new(on_arrival: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            in_rotation: Mutex::default(),
            on_arrival: Box::new(on_arrival),
        }
    }

    /// Records the modules in rotation now; acts once if any of them was not before.
    pub(crate) fn observe(&self, now: BTreeSet<String>) {
        let arrived: Vec<String> = {
            let mut before = self.in_rotation.lock().unwrap_or_else(|e| e.into_inner());
            let arrived = now.difference(&before).cloned().collect();
            *before = now;
            arrived
        };
        if !arrived.is_empty() {
            tracing::info!(
                modules = arrived.join(", "),
                "Module(s) in rotation; sending what waited for them."
            );
            (self.on_arrival)();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[test]
    fn acts_when_a_module_comes_and_when_it_comes_back() {
        let calls = Arc::new(AtomicUsize::new(0));
        let arrivals = Arrivals::new({
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        });
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        arrivals.observe(set(&[]));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        arrivals.observe(set(&["payments"]));
        arrivals.observe(set(&["payments"]));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        arrivals.observe(set(&[]));
        arrivals.observe(set(&["payments", "inventory"]));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
