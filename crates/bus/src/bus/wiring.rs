//! What the app does to a process's bus while it wires the topology, and what it asks of it.

use std::sync::Arc;

use banyan_db::Db;

use crate::transport::Transport;

use super::{Bus, read, write};

/// The app's handle on a process's bus: where modules hosted elsewhere are reached, where
/// events go, when events may flow; and what the bus holds (for registrations, `/ready` and
/// metrics). Modules never see it: they get a [`ModuleBus`](crate::ModuleBus).
#[derive(Debug, Clone, Copy)]
pub struct Wiring<'a> {
    pub(super) bus: &'a Bus,
}

impl Wiring<'_> {
    /// Lets events flow: every module of the process has subscribed (see [`Bus::held`]).
    pub fn open_events(self) {
        self.bus.inner.events_open.send_replace(true);
    }

    /// Routes the requests of `module` (and events it must see) through `transport`: the
    /// module is hosted in another process.
    pub fn set_remote(self, module: &str, transport: Arc<dyn Transport>) {
        write(&self.bus.inner.remotes).insert(module.to_owned(), transport);
    }

    /// Sends every published event through `transport` too, for subscribers in other processes.
    pub fn forward_events_to(self, transport: Arc<dyn Transport>) {
        write(&self.bus.inner.event_forwarders).push(transport);
    }

    /// Module `group` of this process receives its events through the transport's broker
    /// only: a published event skips the group's local queue, because the broker (NATS
    /// JetStream, whose durable consumer for the group this process also reads) hands it back.
    /// Without this the group would get every locally published event twice (its inbox would
    /// drop the second). Applies only while at least one forwarder is set, so an event is
    /// never left with no way to the group.
    pub fn consume_through_transport(self, group: &str) {
        write(&self.bus.inner.through_transport).insert(group.to_owned());
    }

    /// Whether this process has a handler for `subject`.
    pub fn handles(self, subject: &str) -> bool {
        read(&self.bus.inner.requests).contains_key(subject)
    }

    /// Gives module `group` a database for its dead letters.
    pub fn attach_store(self, group: &'static str, db: Db) {
        self.bus.group(group).attach(db);
    }

    /// Whether anything (here or elsewhere) listens to `subject`.
    pub fn has_subscribers(self, subject: &str) -> bool {
        let local = read(&self.bus.inner.subscriptions)
            .get(subject)
            .is_some_and(|s| !s.is_empty());
        local || !read(&self.bus.inner.event_forwarders).is_empty()
    }

    /// The event subjects module `group` subscribes to in this process (for transports that
    /// must ask a broker for exactly those).
    pub fn subscriptions_of(self, group: &str) -> Vec<&'static str> {
        let mut subjects: Vec<&'static str> = read(&self.bus.inner.subscriptions)
            .iter()
            .filter(|(_, subs)| subs.iter().any(|s| s.group.name == group))
            .map(|(subject, _)| *subject)
            .collect();
        subjects.sort_unstable();
        subjects
    }

    /// The subscribing modules of this process.
    pub fn groups(self) -> Vec<&'static str> {
        let mut groups: Vec<&'static str> = read(&self.bus.inner.groups).keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// The request subjects handled in this process.
    pub fn handled_subjects(self) -> Vec<&'static str> {
        let mut subjects: Vec<&'static str> =
            read(&self.bus.inner.requests).keys().copied().collect();
        subjects.sort_unstable();
        subjects
    }

    /// Events waiting in the queues of module `group`, for metrics and tests.
    pub fn queue_depth(self, group: &str) -> usize {
        read(&self.bus.inner.groups)
            .get(group)
            .map_or(0, |g| g.partitions.iter().map(|p| p.len()).sum())
    }

    /// Events waiting in each worker's queue of module `group`, by partition.
    pub fn queue_depths(self, group: &str) -> Vec<usize> {
        read(&self.bus.inner.groups)
            .get(group)
            .map_or_else(Vec::new, |g| {
                g.partitions[..g.partitions_in_use()]
                    .iter()
                    .map(|p| p.len())
                    .collect()
            })
    }

    /// Every event handler queue's capacity, summed over a group's workers.
    pub fn queue_capacity(self, group: &str) -> usize {
        read(&self.bus.inner.groups).get(group).map_or(0, |g| {
            g.partitions_in_use() * self.bus.inner.config.event_queue
        })
    }
}
