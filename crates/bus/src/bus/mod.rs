//! The bus handle: request/reply and publish/subscribe, in process or through a transport.
//!
//! # Layout
//! - this file: [`Bus`], its shared tables ([`Inner`], each field with its purpose and
//!   lifecycle), start (held or open) and shutdown.
//! - `requests`: `handle` and `request`: a request runs its handler on the caller's task.
//! - `events`: `subscribe`, `publish` and `dispatch`: an event goes to one worker of each
//!   subscribing module, the aggregate's events in order.
//! - `wiring`: [`Wiring`], what the app does to a process's bus: remote routes, forwarders,
//!   opening events, and what it asks of it (subscriptions, queue depths).
//! - `inbound`: [`Inbound`], what a transport's receiving side hands the bus: requests and
//!   events that arrived from another process, and messages that cannot be delivered.

mod events;
mod inbound;
mod requests;
mod wiring;

pub use events::Delivered;
pub(crate) use events::{Ack, Dispatch, Mode, OutgoingEvent};
use events::{Group, Subscription};
pub use inbound::{Accepted, Inbound};
use requests::RequestEndpoint;
pub use wiring::Wiring;

use std::{
    any::Any,
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    BusConfig, BusError,
    lock::{read, write},
    policy::{EdgeState, Faults, Policies},
    transport::Transport,
};

/// A message payload shared, untyped, between the publisher and every subscriber in process.
pub(crate) type SharedPayload = Arc<dyn Any + Send + Sync>;

/// The bus. A cheap handle (`Clone` is one atomic increment) around shared routing tables.
///
/// Handlers and subscriptions are registered at start-up; after that the tables are only read.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

struct Inner {
    config: BusConfig,
    /// Every edge's policy and live state (breaker, bulkhead, retry budget).
    policies: Policies,
    /// Faults injected into this process's handlers (`bus.faults`).
    faults: Arc<Faults>,
    /// Request handlers of this process, by subject.
    requests: RwLock<HashMap<&'static str, Arc<dyn RequestEndpoint>>>,
    /// Subscribing modules of this process, by event subject.
    subscriptions: RwLock<HashMap<&'static str, Vec<Subscription>>>,
    /// Subscribing modules of this process, by name.
    groups: RwLock<HashMap<&'static str, Arc<Group>>>,
    /// Transports to modules hosted elsewhere, by module name.
    remotes: RwLock<HashMap<String, Arc<dyn Transport>>>,
    /// Where events go that subscribers in other processes wait for.
    event_forwarders: RwLock<Vec<Arc<dyn Transport>>>,
    /// Subscribing modules of this process that take their events from a forwarder's broker
    /// only (see [`Bus::consume_through_transport`]), not from the local queues as well.
    through_transport: RwLock<HashSet<String>>,
    /// Cancelled when shutdown starts: no new work is taken.
    closing: CancellationToken,
    /// Whether events may be dispatched yet (see [`Bus::held`]).
    events_open: tokio::sync::watch::Sender<bool>,
    /// Bumped when the outboxes should resend what waits at once (see
    /// [`Bus::resend_waiting_events`]).
    resend: tokio::sync::watch::Sender<u64>,
    /// Request and event workers; shutdown waits for them to drain their queues.
    workers: TaskTracker,
    /// Relays and other background loops; stopped after the workers have drained.
    background: TaskTracker,
    background_stop: CancellationToken,
}

impl Bus {
    /// A bus that dispatches events as soon as they are published.
    pub fn new(config: BusConfig) -> Self {
        let bus = Self::held(config);
        bus.wiring().open_events();
        bus
    }

    /// A bus that dispatches no event until [`open_events`](Self::open_events), for a process
    /// that wires several modules one after another. Each event is dispatched to the
    /// subscribers known at that moment and its outbox row deleted once they all handled it,
    /// so an event dispatched early (the outbox relay resending after a crash, a module's
    /// start-up) would never reach a module that subscribes a moment later. Held, the fast
    /// path leaves events to the relay, and the relay waits.
    pub fn held(config: BusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                policies: Policies::new(&config.policy, &config.edges, config.request_timeout()),
                faults: Arc::new(Faults::new(&config.faults)),
                config,
                requests: RwLock::default(),
                subscriptions: RwLock::default(),
                groups: RwLock::default(),
                remotes: RwLock::default(),
                event_forwarders: RwLock::default(),
                through_transport: RwLock::default(),
                closing: CancellationToken::new(),
                events_open: tokio::sync::watch::Sender::new(false),
                resend: tokio::sync::watch::Sender::new(0),
                workers: TaskTracker::new(),
                background: TaskTracker::new(),
                background_stop: CancellationToken::new(),
            }),
        }
    }

    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Asks every outbox of this process to send again, now, every event it still holds,
    /// instead of when each one's lease runs out: for when a module elsewhere that events
    /// were waiting for has come (back) into rotation. An event whose delivery was still under
    /// way goes twice; the subscribers' inboxes drop the second.
    pub fn resend_waiting_events(&self) {
        self.inner.resend.send_modify(|generation| *generation += 1);
    }

    /// What the relays watch for [`resend_waiting_events`](Self::resend_waiting_events).
    pub(crate) fn resend_requests(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.resend.subscribe()
    }

    /// The fault injected into the handlers of `subject` (or the routes of a module, by its
    /// name) now, if any.
    pub fn fault_of(&self, subject: &str) -> Option<crate::policy::Fault> {
        self.inner.faults.of(subject)
    }

    /// Sets (or with `None` clears) the fault of a module or subject while the process runs:
    /// for tests and demonstrations of the policies, through the app's admin route when
    /// `bus.fault_api` allows it.
    pub fn set_fault(&self, target: &str, fault: Option<crate::policy::Fault>) {
        self.inner.faults.set(target, fault);
    }

    /// Every fault injected now, by module or subject.
    pub fn faults(&self) -> std::collections::BTreeMap<String, crate::policy::Fault> {
        self.inner.faults.all()
    }

    /// The edges this process has called on so far, with their breakers and bulkheads.
    pub fn edges(&self) -> Vec<EdgeState> {
        self.inner
            .policies
            .edges()
            .iter()
            .map(|edge| edge.state())
            .collect()
    }

    /// Waits until events may flow; `false` if the bus started closing first.
    async fn events_opened(&self) -> bool {
        let mut open = self.inner.events_open.subscribe();
        tokio::select! {
            opened = open.wait_for(|open| *open) => opened.is_ok(),
            () = self.inner.closing.cancelled() => false,
        }
    }

    /// Spawns a background loop (a relay) that runs until shutdown, after the workers drained.
    pub(crate) fn spawn_background<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.inner.background_stop.clone();
        self.inner.background.spawn(task(stop));
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.inner.closing.is_cancelled()
    }

    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    /// Stops taking work, lets every worker finish what its queue holds, then stops the
    /// background loops (which flush what the workers completed). Waits at most
    /// `drain_timeout_ms`; returns whether everything drained in time.
    pub async fn shutdown(&self) -> bool {
        let inner = &self.inner;
        inner.closing.cancel();
        for endpoint in read(&inner.requests).values() {
            endpoint.close();
        }
        for group in read(&inner.groups).values() {
            for partition in &group.partitions {
                partition.close();
            }
        }
        inner.workers.close();
        let deadline = Duration::from_millis(inner.config.drain_timeout_ms);
        let drained = tokio::time::timeout(deadline, inner.workers.wait())
            .await
            .is_ok();
        inner.background_stop.cancel();
        inner.background.close();
        let stopped = tokio::time::timeout(deadline, inner.background.wait())
            .await
            .is_ok();
        if !(drained && stopped) {
            tracing::warn!("Bus shutdown timed out; undelivered events stay in the outboxes.");
        }
        drained && stopped
    }

    /// What the app does to wire this process's bus (see [`Wiring`]).
    pub fn wiring(&self) -> Wiring<'_> {
        Wiring { bus: self }
    }

    /// Where a transport's receiving side hands in what arrived by `via` (`http`, `grpc`,
    /// `nats`: how the metrics label it; see [`Inbound`]).
    pub fn inbound(&self, via: &'static str) -> Inbound<'_> {
        Inbound { bus: self, via }
    }
}

pub(crate) fn unavailable(subject: &str, reason: &str) -> BusError {
    BusError::Unavailable {
        subject: subject.into(),
        reason: reason.into(),
    }
}

pub(crate) fn codec(subject: &str, reason: &str) -> BusError {
    BusError::Codec {
        subject: subject.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use futures::future::BoxFuture;
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    use super::*;
    use crate::{Context, Envelope, Event, RemoteReply};

    #[derive(Debug, Serialize, Deserialize)]
    struct Happened {
        id: Uuid,
    }

    impl banyan_message::Message for Happened {
        const SUBJECT: &'static str = "test.happened.v1";
    }

    impl Event for Happened {
        fn aggregate_id(&self) -> Uuid {
            self.id
        }
    }

    /// A broker stand-in that records what it was handed.
    #[derive(Default)]
    struct Recorder {
        published: Mutex<Vec<String>>,
    }

    impl Transport for Recorder {
        fn placement(&self) -> &'static str {
            "recorder"
        }

        fn request(
            &self,
            envelope: Envelope,
            _: Arc<[u8]>,
            _: Duration,
        ) -> BoxFuture<'_, Result<RemoteReply, BusError>> {
            Box::pin(async move {
                Err(BusError::NoHandler {
                    subject: envelope.subject,
                })
            })
        }

        fn publish(
            &self,
            envelope: Envelope,
            _: Arc<str>,
            _: Uuid,
        ) -> BoxFuture<'_, Result<(), BusError>> {
            self.published
                .lock()
                .unwrap()
                .push(envelope.subject.clone());
            Box::pin(async { Ok(()) })
        }
    }

    fn counting(bus: &Bus, group: &'static str) -> Arc<AtomicUsize> {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        bus.subscribe::<Happened, _, _>(group, move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        count
    }

    async fn settle(bus: &Bus) {
        for _ in 0..200 {
            if bus.wiring().queue_depth("a") == 0 && bus.wiring().queue_depth("b") == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_group_consuming_through_the_transport_skips_its_local_queue() {
        let bus = Bus::new(BusConfig::default());
        let (a, b) = (counting(&bus, "a"), counting(&bus, "b"));
        let broker = Arc::new(Recorder::default());
        bus.wiring().forward_events_to(broker.clone());
        bus.wiring().consume_through_transport("a");
        bus.publish(&Context::root(), Happened { id: Uuid::now_v7() })
            .await
            .unwrap();
        settle(&bus).await;
        assert_eq!(
            a.load(Ordering::SeqCst),
            0,
            "a gets it from the broker only"
        );
        assert_eq!(b.load(Ordering::SeqCst), 1, "b still gets it in process");
        assert_eq!(broker.published.lock().unwrap().len(), 1);
        bus.shutdown().await;
    }

    #[tokio::test]
    async fn without_a_forwarder_the_group_keeps_its_local_queue() {
        let bus = Bus::new(BusConfig::default());
        let a = counting(&bus, "a");
        bus.wiring().consume_through_transport("a");
        bus.publish(&Context::root(), Happened { id: Uuid::now_v7() })
            .await
            .unwrap();
        settle(&bus).await;
        assert_eq!(a.load(Ordering::SeqCst), 1, "never left without a way in");
        bus.shutdown().await;
    }
}
