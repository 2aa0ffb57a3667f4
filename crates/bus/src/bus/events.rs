//! Publish/subscribe: every subscribing module gets each event once, an aggregate's events in
//! order.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use banyan_db::{Db, sqlx};
use banyan_message::Event;
use futures::{FutureExt, future::BoxFuture};
use sqlx::{Any, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    BusError, Context, Envelope, HandlerError, dead_letter, envelope::partition_key,
    group_commit::Batch, meters::EventMeters, transport::Transport,
};

use super::{Bus, SharedPayload, codec, read, unavailable, write};

impl Bus {
    fn has_forwarders(&self) -> bool {
        !read(&self.inner.event_forwarders).is_empty()
    }

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
            module: group.name,
            meters: EventMeters::new(group.name, E::SUBJECT),
            _event: std::marker::PhantomData,
        });
        let mut subscriptions = write(&self.inner.subscriptions);
        let subscribers = subscriptions.entry(E::SUBJECT).or_default();
        assert!(
            !subscribers.iter().any(|s| s.group.name == group.name),
            "{} subscribed twice to {}",
            group.name,
            E::SUBJECT
        );
        subscribers.push(Subscription { group, handler });
    }

    pub(super) fn group(&self, name: &'static str) -> Arc<Group> {
        let mut groups = write(&self.inner.groups);
        if let Some(group) = groups.get(name) {
            return group.clone();
        }
        let config = &self.inner.config;
        let (partitions, receivers): (Vec<_>, Vec<_>) = (0..config.event_partitions)
            .map(|_| async_channel::bounded::<Delivery>(config.event_queue))
            .unzip();
        let group = Arc::new(Group {
            name,
            in_use: AtomicUsize::new(partitions.len()),
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
        // A held bus (see `Bus::held`) dispatches nothing until every module of the process
        // has subscribed: an event handed out now would be acked by the subscribers of this
        // moment, its outbox row deleted, and a module subscribing a moment later would never
        // get it. The fast path (TryNow) leaves the event to the relay; the relay waits.
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
        // The subscribers known now are the event's audience: the ack below counts exactly
        // them, and the outbox row is deleted when they have all reported. Cloned out of the
        // lock so that no lock is held across an await.
        let mut subscribers: Vec<Subscription> = read(&self.inner.subscriptions)
            .get(message.envelope.subject.as_str())
            .cloned()
            .unwrap_or_default();
        let forwarders: Vec<Arc<dyn Transport>> = read(&self.inner.event_forwarders).clone();
        // A group that reads its events from the broker (its JetStream consumer) gets them from
        // there, this process's own included: a local copy as well would be a second delivery.
        // Only while a forwarder exists, so an event always has a way to every group.
        if !forwarders.is_empty() {
            let through = read(&self.inner.through_transport);
            if !through.is_empty() {
                subscribers.retain(|s| !through.contains(s.group.name));
            }
        }
        // Chaos runs deliver everything twice, to show that inboxes make each effect happen once.
        let copies = if self.inner.config.chaos_duplicate_deliveries {
            2
        } else {
            1
        };
        // Declared before the first delivery can report: a fast handler finishing before the
        // count is known must not complete the event early (Ack holds a placeholder count).
        if let Some(ack) = ack {
            ack.expect(subscribers.len() * copies + forwarders.len());
        }
        for subscription in subscribers {
            // One partition per aggregate key: a group's events of one aggregate are handled by
            // one worker, in the order dispatched; other aggregates proceed in parallel.
            let partition = subscription.group.partition(message.key);
            for _ in 0..copies {
                let delivery = Delivery {
                    envelope: message.envelope.clone(),
                    payload: message.payload.clone(),
                    json: message.json.clone(),
                    handler: subscription.handler.clone(),
                    ack: ack.cloned(),
                    replay_of: None,
                    via: crate::meters::IN_PROCESS,
                };
                match mode {
                    Mode::Wait => partition.send(delivery).await.map_err(|_| {
                        unavailable(&message.envelope.subject, "the subscriber is shutting down")
                    })?,
                    // The fast path after a commit never waits on a full queue: the saga's modules
                    // publish to each other in a cycle, and a worker blocked on a peer's full
                    // queue while that peer's worker blocks on its own would deadlock. What was
                    // queued stays queued (the unfinished ack keeps the row); the relay resends
                    // the rest and inboxes drop the repeats.
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
                let subject = envelope.subject.clone();
                let forwarded = forwarder.publish(envelope, json, aggregate).await;
                crate::meters::event_forwarded(&subject, forwarder.placement(), forwarded.is_ok());
                match forwarded {
                    Ok(()) => {
                        if let Some(ack) = ack {
                            ack.done();
                        }
                    }
                    // No `done`: the event stays unacked, its row's lease lapses and the relay
                    // sends it again (to every subscriber; inboxes drop what they had).
                    Err(error) => {
                        tracing::warn!(%error, "Forwarding an event failed; the relay will resend it.");
                    }
                }
            });
        }
        Ok(Dispatch::Queued)
    }

    /// Queues a dead letter for the module that failed it. The worker marks it replayed when
    /// the handler succeeds, or dead again when it fails every attempt once more.
    pub(crate) async fn replay(
        &self,
        group: &str,
        letter: &dead_letter::StoredLetter,
    ) -> Result<(), BusError> {
        let subscription = read(&self.inner.subscriptions)
            .get(letter.envelope.subject.as_str())
            .and_then(|subs| subs.iter().find(|s| s.group.name == group).cloned());
        let Some(subscription) = subscription else {
            return Err(BusError::NoHandler {
                subject: letter.envelope.subject.clone(),
            });
        };
        let partition = subscription.group.partition(letter.aggregate_key);
        partition
            .send(Delivery {
                envelope: Arc::new(letter.envelope.clone()),
                payload: None,
                json: Some(letter.payload.clone()),
                handler: subscription.handler.clone(),
                ack: None,
                replay_of: Some(letter.id),
                via: crate::meters::IN_PROCESS,
            })
            .await
            .map_err(|_| unavailable(&letter.envelope.subject, "the subscriber is shutting down"))
    }
}

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
    pub(super) remaining: AtomicUsize,
    pub(super) on_complete: Box<dyn Fn() + Send + Sync>,
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

pub(super) struct Delivery {
    pub(super) envelope: Arc<Envelope>,
    pub(super) payload: Option<SharedPayload>,
    pub(super) json: Option<Arc<str>>,
    pub(super) handler: Arc<dyn EventHandler>,
    pub(super) ack: Option<Arc<Ack>>,
    /// Set when this delivery replays a dead letter.
    pub(super) replay_of: Option<Uuid>,
    /// How it reached this process, as the metrics label it: `in_process` (published or
    /// resent here) or the transport it arrived by.
    pub(super) via: &'static str,
}

#[derive(Clone)]
pub(super) struct Subscription {
    pub(super) group: Arc<Group>,
    pub(super) handler: Arc<dyn EventHandler>,
}

/// One subscribing module in this process: its workers' queues and its dead-letter store.
pub(super) struct Group {
    pub(super) name: &'static str,
    pub(super) partitions: Vec<async_channel::Sender<Delivery>>,
    /// How many of the partitions take events: all of them, unless the module's database
    /// takes fewer writers at once (SQLite: one). More workers than writers would only queue
    /// at the writer, each with its own small batch, instead of one batch of everything
    /// waiting (ADR 0007).
    pub(super) in_use: AtomicUsize,
    pub(super) store: std::sync::OnceLock<Db>,
}

impl Group {
    /// The queue of the worker that handles the events of aggregate `key`.
    pub(super) fn partition(&self, key: u64) -> &async_channel::Sender<Delivery> {
        &self.partitions[(key % self.partitions_in_use() as u64) as usize]
    }

    pub(super) fn partitions_in_use(&self) -> usize {
        self.in_use
            .load(Ordering::Relaxed)
            .clamp(1, self.partitions.len())
    }

    /// Gives the module's subscriptions their store (dead letters, batches), and matches the
    /// partitions in use to the writers the store takes. Called at start-up, before events flow.
    pub(super) fn attach(&self, db: Db) {
        self.in_use.store(
            self.partitions.len().min(db.concurrent_writers()),
            Ordering::Relaxed,
        );
        let _ = self.store.set(db);
    }
}

/// A subscriber's handler, seen without its event type.
pub(super) trait EventHandler: Send + Sync {
    fn call(
        &self,
        envelope: Arc<Envelope>,
        payload: SharedPayload,
    ) -> BoxFuture<'static, Result<(), HandlerError>>;
    fn decode(&self, json: &str) -> Result<SharedPayload, serde_json::Error>;
    fn encode(&self, payload: &SharedPayload) -> Option<String>;
    /// Its deliveries' counters and latency, by how they arrived.
    fn meters(&self) -> &EventMeters;
}

pub(super) struct TypedEventHandler<E, F> {
    pub(super) handler: F,
    /// The subscribing module.
    pub(super) module: &'static str,
    pub(super) meters: EventMeters,
    pub(super) _event: std::marker::PhantomData<fn() -> E>,
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
        let context = Context::caused_by(&envelope, self.module);
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

    fn meters(&self) -> &EventMeters {
        &self.meters
    }
}

/// One worker of a subscribing module: takes deliveries from its queue in order, retries
/// failures with backoff, dead-letters what fails every attempt.
pub(super) struct EventWorker {
    pub(super) group: Arc<Group>,
    pub(super) bus: Bus,
}

impl EventWorker {
    async fn run(self, queue: async_channel::Receiver<Delivery>) {
        let most = self.bus.config().event_batch.max(1);
        // A delivery taken from the queue that could not join the batch before it.
        let mut next: Option<Delivery> = None;
        loop {
            let first = match next.take() {
                Some(delivery) => delivery,
                None => match queue.recv().await {
                    Ok(delivery) => delivery,
                    Err(_) => break,
                },
            };
            let Some(db) = self
                .group
                .store
                .get()
                .filter(|_| most > 1 && batchable(&first))
            else {
                self.deliver(first, None).await;
                continue;
            };
            // The module's writer first: while this worker waited for it (behind the other
            // workers, the requests and the relay), more events queued, and they join now
            // (group commit: the batch grows with the load, and adds no wait of its own).
            let tx = match db.begin().await {
                Ok(tx) => tx,
                Err(error) => {
                    tracing::debug!(module = self.group.name, %error, "Could not begin a batch; delivering one by one.");
                    self.deliver(first, None).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < most {
                match queue.try_recv() {
                    Ok(delivery) if batchable(&delivery) => batch.push(delivery),
                    Ok(delivery) => {
                        next = Some(delivery);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.deliver_together(tx, batch).await;
        }
    }

    /// Handles `deliveries` in one transaction, `tx` (see `group_commit`). If any of them
    /// fails, none is applied, and each is delivered again on its own, with retries and dead
    /// letters.
    async fn deliver_together(&self, tx: Transaction<'static, Any>, deliveries: Vec<Delivery>) {
        let mut payloads = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            let payload = match (&delivery.payload, &delivery.json) {
                (Some(payload), _) => Some(payload.clone()),
                (None, Some(json)) => delivery.handler.decode(json).ok(),
                (None, None) => None,
            };
            match payload {
                Some(payload) => payloads.push(payload),
                // Undecodable: one by one, where the dead-letter path is.
                None => {
                    drop(tx);
                    return self.deliver_each(deliveries, None).await;
                }
            }
        }
        let messages: Vec<(Uuid, &str)> = deliveries
            .iter()
            .map(|d| (d.envelope.message_id, d.envelope.subject.as_str()))
            .collect();
        let batch = match Batch::begin(self.group.name, tx, &messages).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::debug!(module = self.group.name, %error, "Could not begin a batch; delivering one by one.");
                return self.deliver_each(deliveries, None).await;
            }
        };
        let started = Instant::now();
        for (index, (delivery, payload)) in deliveries.iter().zip(payloads).enumerate() {
            let span = delivery_span(self.group.name, &delivery.envelope);
            let work = delivery
                .handler
                .call(delivery.envelope.clone(), payload)
                .instrument(span.clone());
            let outcome = AssertUnwindSafe(batch.run(work))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err("the handler panicked".into()));
            // A handler that failed here had its first attempt: one by one, it goes on from
            // its second, after the backoff. The others start afresh.
            let failed = match outcome {
                Ok(()) => batch.spoiled().map(|why| (why.to_owned(), None)),
                Err(error) => Some((error.to_string(), Some((index, error.to_string())))),
            };
            if let Some((why, failed)) = failed {
                tracing::debug!(
                    module = self.group.name,
                    why,
                    "Batch rolled back; delivering one by one."
                );
                drop(batch);
                return self.deliver_each(deliveries, failed).await;
            }
        }
        match batch.commit().await {
            Ok(()) => {
                tracing::trace!(
                    module = self.group.name,
                    size = deliveries.len(),
                    "Batch committed."
                );
                // Each handler's share of the batch's time: its own is not told apart.
                let each = started.elapsed() / deliveries.len().max(1) as u32;
                for delivery in &deliveries {
                    delivery.handler.meters().record(delivery.via, "ok", each);
                    if let Some(ack) = &delivery.ack {
                        ack.done();
                    }
                }
            }
            Err(error) => {
                tracing::debug!(module = self.group.name, %error, "Batch did not commit; delivering one by one.");
                drop(batch);
                self.deliver_each(deliveries, None).await;
            }
        }
    }

    /// Delivers each on its own, in order; the one whose handler failed in the batch (its
    /// index, and the error of that first attempt) from its second attempt.
    async fn deliver_each(&self, deliveries: Vec<Delivery>, failed: Option<(usize, String)>) {
        let (failed_at, mut error) = failed.map_or((None, None), |(i, e)| (Some(i), Some(e)));
        for (index, delivery) in deliveries.into_iter().enumerate() {
            let first_failure = if failed_at == Some(index) {
                error.take()
            } else {
                None
            };
            self.deliver(delivery, first_failure).await;
        }
    }

    /// Delivers one event, retrying failures with backoff, then dead-lettering. With
    /// `first_failure` (the error of a first attempt made in a batch) it goes on from the
    /// second attempt.
    async fn deliver(&self, delivery: Delivery, first_failure: Option<String>) {
        let config = self.bus.config();
        let span = delivery_span(self.group.name, &delivery.envelope);
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
        if let Some(error) = first_failure {
            // Its first attempt, made in a batch, failed.
            let counted = if attempt >= config.max_attempts {
                "dead_lettered"
            } else {
                "retried"
            };
            (delivery.handler.meters()).record(delivery.via, counted, Duration::ZERO);
            if attempt >= config.max_attempts {
                span.in_scope(|| {
                    tracing::error!(attempt, %error, "Event failed its last attempt; dead-lettering it.")
                });
                self.dead_letter(&delivery, &error, attempt)
                    .instrument(span)
                    .await;
                return;
            }
            span.in_scope(|| tracing::warn!(attempt, %error, "Event handler failed; retrying."));
            tokio::select! {
                () = tokio::time::sleep(config.backoff(attempt)) => {}
                () = self.bus.closing().cancelled() => return,
            }
            attempt += 1;
        }
        loop {
            let started = Instant::now();
            let outcome = AssertUnwindSafe(
                delivery
                    .handler
                    .call(delivery.envelope.clone(), payload.clone())
                    .instrument(span.clone()),
            )
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err("the handler panicked".into()));
            let counted = match &outcome {
                Ok(()) => "ok",
                Err(_) if attempt >= config.max_attempts => "dead_lettered",
                Err(_) => "retried",
            };
            (delivery.handler.meters()).record(delivery.via, counted, started.elapsed());
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

/// Whether a delivery may share a batch: replays of dead letters go alone, so that the letter's
/// state follows its own handler's outcome.
fn batchable(delivery: &Delivery) -> bool {
    delivery.replay_of.is_none()
}

/// The span of `module` handling one delivery: the same span ids as the handler's context
/// (`Context::caused_by`), so logs and the exported trace name one span.
fn delivery_span(module: &'static str, envelope: &Envelope) -> tracing::Span {
    let cx = Context::caused_by(envelope, module);
    tracing::info_span!(
        "event",
        module,
        subject = envelope.subject.as_str(),
        correlation_id = %envelope.correlation_id,
        message_id = %envelope.message_id,
        trace_id = %cx.trace().trace_hex(),
        span_id = %cx.trace().span_hex(),
        parent_span_id = %cx.parent_span_hex(),
    )
}
