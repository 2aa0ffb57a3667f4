//! The bus handle: request/reply and publish/subscribe, in process or through a transport.

use std::{
    any::Any,
    collections::{HashMap, HashSet},
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use banyan_db::Db;
use banyan_message::{Event, Rejection, Request, module_of};
use futures::{FutureExt, future::BoxFuture};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    BusConfig, BusError, Context, Envelope, HandlerError, dead_letter,
    envelope::partition_key,
    transport::{RemoteReply, Transport},
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
        bus.open_events();
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
                config,
                requests: RwLock::default(),
                subscriptions: RwLock::default(),
                groups: RwLock::default(),
                remotes: RwLock::default(),
                event_forwarders: RwLock::default(),
                through_transport: RwLock::default(),
                closing: CancellationToken::new(),
                events_open: tokio::sync::watch::Sender::new(false),
                workers: TaskTracker::new(),
                background: TaskTracker::new(),
                background_stop: CancellationToken::new(),
            }),
        }
    }

    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Lets events flow: every module of the process has subscribed (see [`Bus::held`]).
    pub fn open_events(&self) {
        self.inner.events_open.send_replace(true);
    }

    /// Waits until events may flow; `false` if the bus started closing first.
    async fn events_opened(&self) -> bool {
        let mut open = self.inner.events_open.subscribe();
        tokio::select! {
            opened = open.wait_for(|open| *open) => opened.is_ok(),
            () = self.inner.closing.cancelled() => false,
        }
    }

    // ---------------------------------------------------------------- request / reply

    /// Registers the handler of request `R` in this process.
    ///
    /// In process a request runs its handler on the caller's own task: no hop to a worker, no
    /// serialization. At most `config.request_concurrency` of them run at once; callers beyond
    /// that wait their turn (a fair semaphore), which is the bus's backpressure for requests.
    ///
    /// # Panics
    /// If `R` already has a handler: that is a wiring mistake, caught at start-up.
    pub fn handle<R, F, Fut>(&self, module: &'static str, handler: F)
    where
        R: Request,
        F: Fn(Context, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Response, Rejection>> + Send + 'static,
    {
        let handler: BoxedRequestHandler<R> =
            Arc::new(move |cx, request| Box::pin(handler(cx, request)));
        let endpoint: Arc<dyn RequestEndpoint> = Arc::new(TypedEndpoint::<R> {
            module,
            handler,
            permits: Arc::new(Semaphore::new(self.inner.config.request_concurrency)),
            in_flight: self.inner.workers.clone(),
        });
        let previous = self
            .inner
            .requests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(R::SUBJECT, endpoint);
        assert!(
            previous.is_none(),
            "two handlers registered for {}",
            R::SUBJECT
        );
    }

    /// Sends request `R` and waits for its answer, within the configured deadline.
    pub async fn request<R: Request>(
        &self,
        cx: &Context,
        request: R,
    ) -> Result<R::Response, BusError> {
        self.request_within(cx, request, self.inner.config.request_timeout())
            .await
    }

    /// Sends request `R` and waits for its answer, at most `deadline`.
    pub async fn request_within<R: Request>(
        &self,
        cx: &Context,
        request: R,
        deadline: Duration,
    ) -> Result<R::Response, BusError> {
        if self.inner.closing.is_cancelled() {
            return Err(unavailable(R::SUBJECT, "the bus is shutting down"));
        }
        let local = self
            .inner
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(R::SUBJECT)
            .cloned();
        if let Some(endpoint) = local {
            let Some(endpoint) = endpoint.as_any().downcast_ref::<TypedEndpoint<R>>() else {
                return Err(codec(R::SUBJECT, "handler registered with another type"));
            };
            let message_id = Uuid::now_v7();
            return endpoint
                .call(cx.handling(message_id), message_id, request, deadline)
                .await;
        }
        let envelope = cx.envelope(R::SUBJECT);
        let Some(remote) = self.remote_for(R::SUBJECT) else {
            return Err(BusError::NoHandler {
                subject: R::SUBJECT.into(),
            });
        };
        let body = serde_json::to_vec(&request).map_err(|e| codec(R::SUBJECT, &e.to_string()))?;
        let call = remote.request(envelope, body.into(), deadline);
        let reply = match tokio::time::timeout(deadline, call).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(BusError::Timeout {
                    subject: R::SUBJECT.into(),
                    after: deadline,
                });
            }
        };
        match reply {
            RemoteReply::Ok(body) => {
                serde_json::from_slice(&body).map_err(|e| codec(R::SUBJECT, &e.to_string()))
            }
            RemoteReply::Rejected(rejection) => Err(BusError::Rejected(rejection)),
        }
    }

    /// Answers a request that arrived from another process as JSON: the server side of every
    /// transport. The answer is JSON too, or the rejection, intact.
    pub async fn serve_remote_request(
        &self,
        envelope: Envelope,
        body: &[u8],
        deadline: Duration,
    ) -> Result<RemoteReply, BusError> {
        let endpoint = self
            .inner
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(envelope.subject.as_str())
            .cloned();
        let Some(endpoint) = endpoint else {
            return Err(BusError::NoHandler {
                subject: envelope.subject,
            });
        };
        endpoint.call_json(envelope, body, deadline).await
    }

    /// Routes the requests of `module` (and events it must see) through `transport`: the
    /// module is hosted in another process.
    pub fn set_remote(&self, module: &str, transport: Arc<dyn Transport>) {
        self.inner
            .remotes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(module.to_owned(), transport);
    }

    /// Sends every published event through `transport` too, for subscribers in other processes.
    pub fn forward_events_to(&self, transport: Arc<dyn Transport>) {
        self.inner
            .event_forwarders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(transport);
    }

    /// Module `group` of this process receives its events through the transport's broker
    /// only: a published event skips the group's local queue, because the broker (NATS
    /// JetStream, whose durable consumer for the group this process also reads) hands it back.
    /// Without this the group would get every locally published event twice (its inbox would
    /// drop the second). Applies only while at least one forwarder is set, so an event is
    /// never left with no way to the group.
    pub fn consume_through_transport(&self, group: &str) {
        self.inner
            .through_transport
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.to_owned());
    }

    fn has_forwarders(&self) -> bool {
        !self
            .inner
            .event_forwarders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn remote_for(&self, subject: &str) -> Option<Arc<dyn Transport>> {
        self.inner
            .remotes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(module_of(subject))
            .cloned()
    }

    /// Whether this process has a handler for `subject`.
    pub fn handles(&self, subject: &str) -> bool {
        self.inner
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(subject)
    }

    // ---------------------------------------------------------------- publish / subscribe

    /// Subscribes module `group` to event `E`. Every subscribing module receives each event
    /// once, however many workers it runs; the group's `event_partitions` workers share the
    /// events, and the events of one aggregate always go to the same worker, in order.
    ///
    /// A failing handler is retried with backoff; after `max_attempts` the event goes to the
    /// group's dead letters (its [`Db`], see [`Bus::attach_store`]).
    pub fn subscribe<E, F, Fut>(&self, group: &'static str, handler: F)
    where
        E: Event,
        F: Fn(Delivered<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let group = self.group(group);
        let handler: Arc<dyn EventHandler> = Arc::new(TypedEventHandler::<E, F> {
            handler,
            _event: std::marker::PhantomData,
        });
        let mut subscriptions = self
            .inner
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let subscribers = subscriptions.entry(E::SUBJECT).or_default();
        assert!(
            !subscribers.iter().any(|s| s.group.name == group.name),
            "{} subscribed twice to {}",
            group.name,
            E::SUBJECT
        );
        subscribers.push(Subscription { group, handler });
    }

    /// Gives module `group` a database for its dead letters.
    pub fn attach_store(&self, group: &'static str, db: Db) {
        let group = self.group(group);
        let _ = group.store.set(db);
    }

    fn group(&self, name: &'static str) -> Arc<Group> {
        let mut groups = self.inner.groups.write().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = groups.get(name) {
            return group.clone();
        }
        let config = &self.inner.config;
        let (partitions, receivers): (Vec<_>, Vec<_>) = (0..config.event_partitions)
            .map(|_| async_channel::bounded::<Delivery>(config.event_queue))
            .unzip();
        let group = Arc::new(Group {
            name,
            partitions,
            store: std::sync::OnceLock::new(),
        });
        for receiver in receivers {
            let worker = EventWorker {
                group: group.clone(),
                bus: self.clone(),
            };
            self.inner.workers.spawn(worker.run(receiver));
        }
        groups.insert(name, group.clone());
        group
    }

    /// Publishes `event` to every subscribing module, waiting for queue space if a
    /// subscriber is behind (backpressure). Not durable: an event that must survive a crash
    /// goes through an [`Outbox`](crate::Outbox) instead.
    pub async fn publish<E: Event>(&self, cx: &Context, event: E) -> Result<(), BusError> {
        let aggregate = event.aggregate_id();
        let json = if self.has_forwarders() {
            Some(
                serde_json::to_string(&event)
                    .map_err(|e| codec(E::SUBJECT, &e.to_string()))?
                    .into(),
            )
        } else {
            None
        };
        let message = OutgoingEvent {
            envelope: Arc::new(cx.envelope(E::SUBJECT)),
            payload: Some(Arc::new(event)),
            json,
            aggregate,
            key: partition_key(aggregate),
        };
        self.dispatch(&message, None, Mode::Wait).await.map(|_| ())
    }

    /// Hands one event to every subscriber: the local modules' queues and the forwarders.
    /// With `Mode::TryNow` nothing waits: a full queue makes the whole dispatch fail with
    /// `Dispatch::Full` (what was already queued stays queued; inboxes absorb the resend).
    pub(crate) async fn dispatch(
        &self,
        message: &OutgoingEvent,
        ack: Option<&Arc<Ack>>,
        mode: Mode,
    ) -> Result<Dispatch, BusError> {
        if self.inner.closing.is_cancelled() {
            return Err(unavailable(
                &message.envelope.subject,
                "the bus is shutting down",
            ));
        }
        if !*self.inner.events_open.borrow() {
            let opened = match mode {
                Mode::TryNow => return Ok(Dispatch::Full),
                Mode::Wait => self.events_opened().await,
            };
            if !opened {
                return Err(unavailable(
                    &message.envelope.subject,
                    "the bus is shutting down",
                ));
            }
        }
        let mut subscribers: Vec<Subscription> = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(message.envelope.subject.as_str())
            .cloned()
            .unwrap_or_default();
        let forwarders: Vec<Arc<dyn Transport>> = self
            .inner
            .event_forwarders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !forwarders.is_empty() {
            let through = self
                .inner
                .through_transport
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if !through.is_empty() {
                subscribers.retain(|s| !through.contains(s.group.name));
            }
        }
        let copies = if self.inner.config.chaos_duplicate_deliveries {
            2
        } else {
            1
        };
        if let Some(ack) = ack {
            ack.expect(subscribers.len() * copies + forwarders.len());
        }
        for subscription in subscribers {
            let partitions = &subscription.group.partitions;
            let partition = &partitions[(message.key % partitions.len() as u64) as usize];
            for _ in 0..copies {
                let delivery = Delivery {
                    envelope: message.envelope.clone(),
                    payload: message.payload.clone(),
                    json: message.json.clone(),
                    handler: subscription.handler.clone(),
                    ack: ack.cloned(),
                    replay_of: None,
                };
                match mode {
                    Mode::Wait => partition.send(delivery).await.map_err(|_| {
                        unavailable(&message.envelope.subject, "the subscriber is shutting down")
                    })?,
                    Mode::TryNow => {
                        if partition.try_send(delivery).is_err() {
                            return Ok(Dispatch::Full);
                        }
                    }
                }
            }
        }
        for forwarder in forwarders {
            let json = match &message.json {
                Some(json) => json.clone(),
                None => return Err(codec(&message.envelope.subject, "event has no JSON form")),
            };
            let envelope = (*message.envelope).clone();
            let aggregate = message.aggregate;
            let ack = ack.cloned();
            // Forwarding waits on the network: never in the publisher's path.
            self.inner.background.spawn(async move {
                match forwarder.publish(envelope, json, aggregate).await {
                    Ok(()) => {
                        if let Some(ack) = ack {
                            ack.done();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Forwarding an event failed; the relay will resend it.");
                    }
                }
            });
        }
        Ok(Dispatch::Queued)
    }

    /// Delivers an event that arrived from another process to this process's subscribers,
    /// decoding it in each. Returns once every local subscriber has handled or dead-lettered it;
    /// `NoHandler` if nothing here subscribes to it.
    pub async fn deliver_remote_event(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        self.deliver_remote(envelope, json, aggregate, None).await
    }

    /// Like [`deliver_remote_event`](Self::deliver_remote_event), to one subscribing module
    /// only: a broker that keeps one consumer per module hands each module its own copy.
    pub async fn deliver_remote_event_to(
        &self,
        group: &str,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        self.deliver_remote(envelope, json, aggregate, Some(group))
            .await
    }

    async fn deliver_remote(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
        only: Option<&str>,
    ) -> Result<(), BusError> {
        let (done, finished) = oneshot::channel();
        let done = std::sync::Mutex::new(Some(done));
        let ack = Ack::new(move || {
            if let Some(done) = done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = done.send(());
            }
        });
        let subscribers = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(envelope.subject.as_str())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| only.is_none_or(|group| s.group.name == group))
            .collect::<Vec<_>>();
        if subscribers.is_empty() {
            // Never a silent drop: the transport decides what an unwanted event means.
            return Err(BusError::NoHandler {
                subject: envelope.subject,
            });
        }
        ack.expect(subscribers.len());
        for subscription in subscribers {
            let partitions = &subscription.group.partitions;
            let partition =
                &partitions[(partition_key(aggregate) % partitions.len() as u64) as usize];
            let delivery = Delivery {
                envelope: Arc::new(envelope.clone()),
                payload: None,
                json: Some(json.clone()),
                handler: subscription.handler.clone(),
                ack: Some(ack.clone()),
                replay_of: None,
            };
            partition
                .send(delivery)
                .await
                .map_err(|_| unavailable(&envelope.subject, "the subscriber is shutting down"))?;
        }
        finished
            .await
            .map_err(|_| unavailable(&envelope.subject, "shut down before the event was handled"))
    }

    /// Queues a dead letter for the module that failed it. The worker marks it replayed when
    /// the handler succeeds, or dead again when it fails every attempt once more.
    pub(crate) async fn replay(
        &self,
        group: &str,
        letter: &dead_letter::StoredLetter,
    ) -> Result<(), BusError> {
        let subscription = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(letter.envelope.subject.as_str())
            .and_then(|subs| subs.iter().find(|s| s.group.name == group).cloned());
        let Some(subscription) = subscription else {
            return Err(BusError::NoHandler {
                subject: letter.envelope.subject.clone(),
            });
        };
        let partitions = &subscription.group.partitions;
        let partition = &partitions[(letter.aggregate_key % partitions.len() as u64) as usize];
        partition
            .send(Delivery {
                envelope: Arc::new(letter.envelope.clone()),
                payload: None,
                json: Some(letter.payload.clone()),
                handler: subscription.handler.clone(),
                ack: None,
                replay_of: Some(letter.id),
            })
            .await
            .map_err(|_| unavailable(&letter.envelope.subject, "the subscriber is shutting down"))
    }

    /// Whether anything (here or elsewhere) listens to `subject`.
    pub fn has_subscribers(&self, subject: &str) -> bool {
        let local = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(subject)
            .is_some_and(|s| !s.is_empty());
        local
            || !self
                .inner
                .event_forwarders
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// The event subjects module `group` subscribes to in this process (for transports that
    /// must ask a broker for exactly those).
    pub fn subscriptions_of(&self, group: &str) -> Vec<&'static str> {
        let mut subjects: Vec<&'static str> = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, subs)| subs.iter().any(|s| s.group.name == group))
            .map(|(subject, _)| *subject)
            .collect();
        subjects.sort_unstable();
        subjects
    }

    /// Records a message that arrived from the wire but cannot be delivered at all (bad JSON,
    /// unknown subject or version) in module `group`'s dead letters, so an operator sees it.
    /// Returns `false` when the group has no store here.
    pub async fn dead_letter_received(
        &self,
        group: &str,
        envelope: &Envelope,
        payload: &str,
        error: &str,
    ) -> Result<bool, banyan_db::sqlx::Error> {
        let store = self
            .inner
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .and_then(|g| g.store.get().cloned());
        let Some(db) = store else {
            return Ok(false);
        };
        dead_letter::record(&db, group, envelope, payload, error, 1).await?;
        Ok(true)
    }

    /// The subscribing modules of this process.
    pub fn groups(&self) -> Vec<&'static str> {
        let mut groups: Vec<&'static str> = self
            .inner
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        groups.sort_unstable();
        groups
    }

    /// The request subjects handled in this process.
    pub fn handled_subjects(&self) -> Vec<&'static str> {
        let mut subjects: Vec<&'static str> = self
            .inner
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        subjects.sort_unstable();
        subjects
    }

    /// Events waiting in the queues of module `group`, for metrics and tests.
    pub fn queue_depth(&self, group: &str) -> usize {
        self.inner
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .map_or(0, |g| g.partitions.iter().map(|p| p.len()).sum())
    }

    /// Every event handler queue's capacity, summed over a group's workers.
    pub fn queue_capacity(&self, group: &str) -> usize {
        self.inner
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .map_or(0, |g| g.partitions.len() * self.inner.config.event_queue)
    }

    // ---------------------------------------------------------------- lifecycle

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
        for endpoint in inner
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            endpoint.close();
        }
        for group in inner
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
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

// -------------------------------------------------------------------- requests, inside

type BoxedRequestHandler<R> = Arc<
    dyn Fn(Context, R) -> BoxFuture<'static, Result<<R as Request>::Response, Rejection>>
        + Send
        + Sync,
>;

/// A registered request handler, seen without its type: typed callers downcast it,
/// remote callers go through JSON.
trait RequestEndpoint: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn call_json<'a>(
        &'a self,
        envelope: Envelope,
        body: &'a [u8],
        deadline: Duration,
    ) -> BoxFuture<'a, Result<RemoteReply, BusError>>;
    fn close(&self);
}

struct TypedEndpoint<R: Request> {
    module: &'static str,
    handler: BoxedRequestHandler<R>,
    /// How many of these requests may run at once; closed at shutdown so no new one starts.
    permits: Arc<Semaphore>,
    /// Shutdown waits until every handler that started has finished.
    in_flight: TaskTracker,
}

impl<R: Request> TypedEndpoint<R> {
    async fn call(
        &self,
        cx: Context,
        message_id: Uuid,
        request: R,
        deadline: Duration,
    ) -> Result<R::Response, BusError> {
        let work = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| unavailable(R::SUBJECT, "the bus is shutting down"))?;
            let _in_flight = self.in_flight.token();
            let span = tracing::info_span!(
                "request",
                module = self.module,
                subject = R::SUBJECT,
                correlation_id = %cx.correlation_id(),
                message_id = %message_id,
            );
            AssertUnwindSafe((self.handler)(cx, request).instrument(span))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(subject = R::SUBJECT, "Request handler panicked.");
                    Err(Rejection::new("internal", "the handler failed"))
                })
                .map_err(BusError::Rejected)
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(answer) => answer,
            Err(_) => Err(BusError::Timeout {
                subject: R::SUBJECT.into(),
                after: deadline,
            }),
        }
    }
}

impl<R: Request> RequestEndpoint for TypedEndpoint<R> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn call_json<'a>(
        &'a self,
        envelope: Envelope,
        body: &'a [u8],
        deadline: Duration,
    ) -> BoxFuture<'a, Result<RemoteReply, BusError>> {
        Box::pin(async move {
            let request: R =
                serde_json::from_slice(body).map_err(|e| codec(R::SUBJECT, &e.to_string()))?;
            let cx = Context::caused_by(&envelope);
            match self.call(cx, envelope.message_id, request, deadline).await {
                Ok(response) => serde_json::to_vec(&response)
                    .map(|body| RemoteReply::Ok(body.into()))
                    .map_err(|e| codec(R::SUBJECT, &e.to_string())),
                Err(BusError::Rejected(rejection)) => Ok(RemoteReply::Rejected(rejection)),
                Err(other) => Err(other),
            }
        })
    }

    fn close(&self) {
        self.permits.close();
    }
}

// -------------------------------------------------------------------- events, inside

/// An event as a subscriber receives it: the event, its envelope, and the context to send
/// further messages in.
#[derive(Debug)]
pub struct Delivered<E> {
    pub envelope: Arc<Envelope>,
    pub event: Arc<E>,
    context: Context,
}

impl<E> Delivered<E> {
    /// The message id, which inboxes key on.
    pub fn message_id(&self) -> Uuid {
        self.envelope.message_id
    }

    /// The context for messages this handler sends: same correlation, caused by this event.
    pub fn context(&self) -> &Context {
        &self.context
    }
}

impl<E> std::ops::Deref for Delivered<E> {
    type Target = E;
    fn deref(&self) -> &E {
        &self.event
    }
}

/// An event on its way out, typed (in process), as JSON (from an outbox row), or both.
#[derive(Clone)]
pub(crate) struct OutgoingEvent {
    pub(crate) envelope: Arc<Envelope>,
    pub(crate) payload: Option<SharedPayload>,
    pub(crate) json: Option<Arc<str>>,
    pub(crate) aggregate: Uuid,
    pub(crate) key: u64,
}

pub(crate) enum Mode {
    /// Wait for queue space.
    Wait,
    /// Give up at once if a queue is full.
    TryNow,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dispatch {
    Queued,
    Full,
}

/// Counts down the deliveries of one event; when the last subscriber has handled (or
/// dead-lettered) it, runs the completion (the outbox deletes its row).
pub(crate) struct Ack {
    remaining: AtomicUsize,
    on_complete: Box<dyn Fn() + Send + Sync>,
}

impl Ack {
    pub(crate) fn new(on_complete: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            // One extra count is held until `expect` knows the number of deliveries, so an
            // early `done` cannot complete the event before every delivery was counted.
            remaining: AtomicUsize::new(1),
            on_complete: Box::new(on_complete),
        })
    }

    /// Declares how many deliveries will report, and releases the placeholder count.
    pub(crate) fn expect(&self, deliveries: usize) {
        self.remaining.fetch_add(deliveries, Ordering::AcqRel);
        self.done();
    }

    pub(crate) fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            (self.on_complete)();
        }
    }
}

struct Delivery {
    envelope: Arc<Envelope>,
    payload: Option<SharedPayload>,
    json: Option<Arc<str>>,
    handler: Arc<dyn EventHandler>,
    ack: Option<Arc<Ack>>,
    /// Set when this delivery replays a dead letter.
    replay_of: Option<Uuid>,
}

#[derive(Clone)]
struct Subscription {
    group: Arc<Group>,
    handler: Arc<dyn EventHandler>,
}

/// One subscribing module in this process: its workers' queues and its dead-letter store.
struct Group {
    name: &'static str,
    partitions: Vec<async_channel::Sender<Delivery>>,
    store: std::sync::OnceLock<Db>,
}

/// A subscriber's handler, seen without its event type.
trait EventHandler: Send + Sync {
    fn call(
        &self,
        envelope: Arc<Envelope>,
        payload: SharedPayload,
    ) -> BoxFuture<'static, Result<(), HandlerError>>;
    fn decode(&self, json: &str) -> Result<SharedPayload, serde_json::Error>;
    fn encode(&self, payload: &SharedPayload) -> Option<String>;
}

struct TypedEventHandler<E, F> {
    handler: F,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<E, F, Fut> EventHandler for TypedEventHandler<E, F>
where
    E: Event,
    F: Fn(Delivered<E>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(
        &self,
        envelope: Arc<Envelope>,
        payload: SharedPayload,
    ) -> BoxFuture<'static, Result<(), HandlerError>> {
        let Ok(event) = payload.downcast::<E>() else {
            return Box::pin(async { Err("event payload of an unexpected type".into()) });
        };
        let context = Context::caused_by(&envelope);
        Box::pin((self.handler)(Delivered {
            envelope,
            event,
            context,
        }))
    }

    fn decode(&self, json: &str) -> Result<SharedPayload, serde_json::Error> {
        Ok(Arc::new(serde_json::from_str::<E>(json)?))
    }

    fn encode(&self, payload: &SharedPayload) -> Option<String> {
        payload
            .downcast_ref::<E>()
            .and_then(|e| serde_json::to_string(e).ok())
    }
}

/// One worker of a subscribing module: takes deliveries from its queue in order, retries
/// failures with backoff, dead-letters what fails every attempt.
struct EventWorker {
    group: Arc<Group>,
    bus: Bus,
}

impl EventWorker {
    async fn run(self, queue: async_channel::Receiver<Delivery>) {
        while let Ok(delivery) = queue.recv().await {
            self.deliver(delivery).await;
        }
    }

    async fn deliver(&self, delivery: Delivery) {
        let config = self.bus.config();
        let subject = delivery.envelope.subject.as_str();
        let span = tracing::info_span!(
            "event",
            module = self.group.name,
            subject,
            correlation_id = %delivery.envelope.correlation_id,
            message_id = %delivery.envelope.message_id,
        );
        let payload = match (&delivery.payload, &delivery.json) {
            (Some(payload), _) => payload.clone(),
            (None, Some(json)) => match delivery.handler.decode(json) {
                Ok(payload) => payload,
                Err(error) => {
                    span.in_scope(|| {
                        tracing::error!(%error, "Event could not be decoded; dead-lettering it.")
                    });
                    self.dead_letter(&delivery, &format!("undecodable: {error}"), 1)
                        .instrument(span)
                        .await;
                    return;
                }
            },
            (None, None) => return,
        };
        let mut attempt = 1;
        loop {
            let outcome = AssertUnwindSafe(
                delivery
                    .handler
                    .call(delivery.envelope.clone(), payload.clone())
                    .instrument(span.clone()),
            )
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err("the handler panicked".into()));
            match outcome {
                Ok(()) => {
                    if let Some(ack) = &delivery.ack {
                        ack.done();
                    }
                    if let Some(letter) = delivery.replay_of {
                        self.mark_replayed(letter).instrument(span).await;
                    }
                    return;
                }
                Err(error) if attempt >= config.max_attempts => {
                    span.in_scope(|| {
                        tracing::error!(attempt, %error, "Event failed its last attempt; dead-lettering it.")
                    });
                    self.dead_letter(&delivery, &error.to_string(), attempt)
                        .instrument(span)
                        .await;
                    return;
                }
                Err(error) => {
                    span.in_scope(
                        || tracing::warn!(attempt, %error, "Event handler failed; retrying."),
                    );
                    let pause = config.backoff(attempt);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        // Shutting down: leave the event unacknowledged; the outbox resends it.
                        () = self.bus.closing().cancelled() => return,
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &str, attempts: u32) {
        let Some(db) = self.group.store.get() else {
            tracing::error!(
                module = self.group.name,
                "No dead-letter store for this module; the event is dropped."
            );
            if let Some(ack) = &delivery.ack {
                ack.done();
            }
            return;
        };
        let payload = match (&delivery.json, &delivery.payload) {
            (Some(json), _) => json.to_string(),
            (None, Some(payload)) => delivery.handler.encode(payload).unwrap_or_default(),
            (None, None) => String::new(),
        };
        let stored = match delivery.replay_of {
            Some(letter) => dead_letter::record_failed_replay(db, letter, error, attempts).await,
            None => {
                dead_letter::record(
                    db,
                    self.group.name,
                    &delivery.envelope,
                    &payload,
                    error,
                    attempts,
                )
                .await
            }
        };
        match stored {
            // Stored durably: for the outbox, the delivery is complete.
            Ok(()) => {
                if let Some(ack) = &delivery.ack {
                    ack.done();
                }
            }
            Err(error) => tracing::error!(
                %error,
                "Could not store a dead letter; the event stays in the outbox to be resent."
            ),
        }
    }

    async fn mark_replayed(&self, letter: Uuid) {
        if let Some(db) = self.group.store.get()
            && let Err(error) = dead_letter::mark_replayed(db, letter).await
        {
            tracing::warn!(%error, "Could not mark a dead letter replayed.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde::{Deserialize, Serialize};

    use super::*;

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
            if bus.queue_depth("a") == 0 && bus.queue_depth("b") == 0 {
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
        bus.forward_events_to(broker.clone());
        bus.consume_through_transport("a");
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
        bus.consume_through_transport("a");
        bus.publish(&Context::root(), Happened { id: Uuid::now_v7() })
            .await
            .unwrap();
        settle(&bus).await;
        assert_eq!(a.load(Ordering::SeqCst), 1, "never left without a way in");
        bus.shutdown().await;
    }
}
