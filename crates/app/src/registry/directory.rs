//! What a process other than main knows of the registry: the listing its heartbeat brings back.

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
};

use banyan_bus::{
    balance::Weights,
    http::{Instances, Subscribers},
};

use super::{Arrivals, Health, Listing, events::Awareness};

/// What a process other than main knows of the others: the registry's last answer.
#[derive(Debug)]
pub(crate) struct Directory {
    /// The modules this process hosts.
    here: BTreeSet<&'static str>,
    /// Every module Banyan has.
    known: Vec<&'static str>,
    own_id: String,
    listing: RwLock<Option<Listing>>,
    /// Each instance's weight by base URL and by bus URL, for the balancers.
    weights: Arc<Weights>,
    /// What is done when a module elsewhere comes (back) into rotation.
    arrivals: Arrivals,
}

impl Directory {
    pub(crate) fn new(
        here: BTreeSet<&'static str>,
        known: Vec<&'static str>,
        own_id: String,
        arrivals: Arrivals,
    ) -> Self {
        Self {
            arrivals,
            here,
            known,
            own_id,
            listing: RwLock::default(),
            weights: Arc::default(),
        }
    }

    /// The instances' weights, as the last listing says.
    pub(crate) fn weights(&self) -> Arc<Weights> {
        self.weights.clone()
    }

    pub(crate) fn update(&self, listing: Listing) {
        for instance in listing.modules.values().flat_map(|m| &m.instances) {
            self.weights.set(&instance.base_url, instance.weight);
            self.weights.set(&instance.bus_url, instance.weight);
        }
        self.arrivals.observe(
            listing
                .modules
                .iter()
                .filter(|(name, _)| !self.here.contains(name.as_str()))
                .filter(|(_, module)| {
                    module
                        .instances
                        .iter()
                        .any(|i| i.health == Health::Healthy && i.instance_id != self.own_id)
                })
                .map(|(name, _)| name.clone())
                .collect(),
        );
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
                    .map(|i| i.bus_url.clone())
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
