//! Reliable events: the outbox, the inbox and the relay.
//!
//! A module changes its state and records the events that announce the change in one
//! transaction, through a [`UnitOfWork`]. After the commit the events go straight to the
//! subscribers' queues as typed values (the fast path, no decoding). Each outbox row stays
//! until every subscriber has handled the event or dead-lettered it; then it is deleted.
//!
//! Each row carries a lease. The module's relay takes rows whose lease ran out (the process
//! crashed after the commit, a queue was full, a handler is still retrying past the lease),
//! renews the lease and delivers them again from their JSON. Delivery is therefore at least
//! once; subscribers make it effectively once by recording each message id in their inbox in
//! the same transaction as their effect ([`UnitOfWork::first_delivery`]).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use banyan_db::{Db, Engine, now_millis, sqlx};
use banyan_message::Event;
use sqlx::{Any, AnyConnection, Row, Transaction};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::{
    Bus, Context, Delivered, Envelope,
    bus::{Ack, Dispatch, Mode, OutgoingEvent},
    dead_letter,
    envelope::partition_key,
    failpoint,
    group_commit::Batch,
};

/// What [`Outbox::backlog`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    /// How long the oldest undelivered event has waited (0: none waits).
    pub oldest_age_ms: i64,
    pub inbox: i64,
    pub dead_letters: i64,
}

/// A module's outbox and its relay. Cheap to clone; one per module.
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

#[derive(Debug)]
struct OutboxInner {
    db: Db,
    bus: Bus,
    /// Message ids whose every delivery completed; the relay deletes their rows in batches.
    completed: mpsc::UnboundedSender<Uuid>,
    /// Wakes the relay before its next tick (a fast-path delivery could not be queued).
    wake: Notify,
    /// The subjects the module declared it publishes; unset, any event may be emitted.
    publishes: OnceLock<&'static [&'static str]>,
}

impl Outbox {
    /// Starts the relay of `db`'s module on the bus. It also carries out the replays asked for
    /// the module's dead letters, and gives the module's subscriptions their dead-letter store.
    pub fn start(bus: &Bus, db: Db) -> Self {
        bus.wiring().attach_store(db.module(), db.clone());
        let (completed, completions) = mpsc::unbounded_channel();
        let outbox = Self {
            inner: Arc::new(OutboxInner {
                db,
                bus: bus.clone(),
                completed,
                wake: Notify::new(),
                publishes: OnceLock::new(),
            }),
        };
        let relay = Relay {
            outbox: outbox.clone(),
        };
        bus.spawn_background(move |stop| relay.run(completions, stop));
        outbox
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The subjects of the events this module publishes: from now on [`UnitOfWork::emit`]
    /// refuses any other. Set once; a second declaration is ignored.
    pub fn declare_publishes(&self, subjects: &'static [&'static str]) {
        let _ = self.inner.publishes.set(subjects);
    }

    /// Starts a write transaction whose events are published when it commits.
    ///
    /// Inside a handler that the worker runs in a batch (group commit, ADR 0007) it shares the
    /// batch's transaction, as [`begin_handling`](Self::begin_handling) does.
    pub async fn begin(&self) -> Result<UnitOfWork, sqlx::Error> {
        if let Some(batch) = Batch::joined(self.inner.db.module()) {
            return Ok(UnitOfWork::new(batch.lend()?, self.clone(), Some(batch)));
        }
        Ok(UnitOfWork::new(
            self.inner.db.begin().await?,
            self.clone(),
            None,
        ))
    }

    /// A unit of work for handling `delivered`, with its inbox entry recorded (see
    /// [`UnitOfWork::first_delivery`]); `None` when this module handled it before (a
    /// redelivery), and the handler should return without applying it again.
    ///
    /// When the worker handles several waiting events in one transaction (group commit, see
    /// ADR 0007), the unit of work shares that transaction: its `commit` hands the work back
    /// to the batch, and what follows a commit (the events' fast path, [`UnitOfWork::on_commit`])
    /// happens when the batch has committed.
    pub async fn begin_handling<E: Event>(
        &self,
        delivered: &Delivered<E>,
    ) -> Result<Option<UnitOfWork>, sqlx::Error> {
        let mut uow = self.begin().await?;
        Ok(uow.first_delivery(delivered).await?.then_some(uow))
    }

    /// Events not yet delivered to every subscriber, for metrics and `/ready`.
    pub async fn pending(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) FROM outbox")
            .fetch_one(self.inner.db.reader())
            .await?
            .try_get(0)
    }

    /// What the module's messaging tables hold now, for metrics: the outbox rows not yet
    /// delivered to everyone and the age of the oldest, the inbox, and the dead letters.
    pub async fn backlog(&self) -> Result<Backlog, sqlx::Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM outbox), (SELECT MIN(created_at) FROM outbox), \
             (SELECT COUNT(*) FROM inbox), \
             (SELECT COUNT(*) FROM dead_letters WHERE status = 'dead')",
        )
        .fetch_one(self.inner.db.reader())
        .await?;
        let oldest: Option<i64> = row.try_get(1)?;
        Ok(Backlog {
            pending: row.try_get(0)?,
            oldest_age_ms: oldest.map_or(0, |at| (banyan_db::now_millis() - at).max(0)),
            inbox: row.try_get(2)?,
            dead_letters: row.try_get(3)?,
        })
    }

    fn ack_for(&self, message_id: Uuid) -> Arc<Ack> {
        let completed = self.inner.completed.clone();
        Ack::new(move || {
            let _ = completed.send(message_id);
        })
    }

    /// The fast path, right after a commit: queue the typed events without waiting. What does
    /// not fit is handed back to the relay at once.
    async fn dispatch_committed(&self, staged: Vec<OutgoingEvent>) {
        for event in staged {
            let message_id = event.envelope.message_id;
            let ack = self.ack_for(message_id);
            match self
                .inner
                .bus
                .dispatch(&event, Some(&ack), Mode::TryNow)
                .await
            {
                Ok(Dispatch::Queued) => {}
                Ok(Dispatch::Full) | Err(_) => {
                    // Let the relay take it on its next pass instead of after the lease.
                    if let Err(error) = self.release_lease(message_id).await {
                        tracing::warn!(%error, "Could not release an outbox lease; the relay resends after it expires.");
                    }
                    self.inner.wake.notify_one();
                }
            }
        }
    }

    async fn release_lease(&self, message_id: Uuid) -> Result<(), sqlx::Error> {
        let mut tx = self.inner.db.begin().await?;
        sqlx::query("UPDATE outbox SET claimed_until = 0 WHERE message_id = $1")
            .bind(message_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}

/// A module's write transaction that can also record events (outbox) and received message ids
/// (inbox). Dereferences to the connection for the module's own queries.
///
/// Dropping it without [`commit`](UnitOfWork::commit) rolls everything back, events included.
pub struct UnitOfWork {
    /// `Some` until the unit of work commits (or, in a batch, hands the transaction back).
    tx: Option<Transaction<'static, Any>>,
    /// The events emitted, as their outbox rows are written at the commit: one statement.
    staged: Vec<OutgoingEvent>,
    on_commit: Vec<Box<dyn FnOnce() + Send>>,
    outbox: Outbox,
    /// The worker's batch whose transaction this borrows (group commit).
    batch: Option<Arc<Batch>>,
}

impl std::fmt::Debug for UnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("module", &self.outbox.inner.db.module())
            .field("staged", &self.staged)
            .field("batched", &self.batch.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OutgoingEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingEvent")
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

impl UnitOfWork {
    fn new(tx: Transaction<'static, Any>, outbox: Outbox, batch: Option<Arc<Batch>>) -> Self {
        Self {
            tx: Some(tx),
            staged: Vec::new(),
            on_commit: Vec::new(),
            outbox,
            batch,
        }
    }

    fn tx(&mut self) -> &mut Transaction<'static, Any> {
        // Only `commit` and `drop` take it, and both consume the unit of work.
        self.tx
            .as_mut()
            .expect("a unit of work keeps its transaction until it ends")
    }

    /// Records `event` in the outbox, in this transaction. It is published if and only if the
    /// transaction commits.
    ///
    /// An event the module did not declare ([`Outbox::declare_publishes`]) is refused: the
    /// declaration is what the architecture diagram is drawn from, so it must be the truth.
    pub async fn emit<E: Event>(&mut self, cx: &Context, event: E) -> Result<(), sqlx::Error> {
        if let Some(declared) = self.outbox.inner.publishes.get()
            && !declared.contains(&E::SUBJECT)
        {
            return Err(sqlx::Error::Protocol(format!(
                "module {} emitted {}, which its `publishes` does not declare",
                self.outbox.inner.db.module(),
                E::SUBJECT
            )));
        }
        let envelope = cx.envelope(E::SUBJECT);
        let json: Arc<str> = serde_json::to_string(&event)
            .map_err(|e| sqlx::Error::Encode(e.into()))?
            .into();
        let aggregate = event.aggregate_id();
        self.staged.push(OutgoingEvent {
            envelope: Arc::new(envelope),
            payload: Some(Arc::new(event)),
            json: Some(json),
            aggregate,
            key: partition_key(aggregate),
        });
        Ok(())
    }

    /// Whether this unit of work shares a worker's batch (group commit, ADR 0007): its changes
    /// then become durable when the batch commits, after `commit` returned.
    pub fn is_batched(&self) -> bool {
        self.batch.is_some()
    }

    /// Runs `callback` once this unit of work's changes are durable: right after its commit,
    /// or, when it shares a worker's batch, after the batch's. Waking whoever waits for what
    /// the handler decided belongs here, not after `commit` returns.
    pub fn on_commit(&mut self, callback: impl FnOnce() + Send + 'static) {
        self.on_commit.push(Box::new(callback));
    }

    /// Records that this module handles `delivered` now. `false` means it was handled before
    /// (a redelivery): the caller should return without applying it again.
    ///
    /// It also serializes this transaction with every other of the module's handlers working
    /// on the same aggregate, in any instance of the module: in one process the bus's
    /// partitions do that, but instances sharing a NATS consumer or HTTP pushes can handle
    /// two events of one order at once, and under PostgreSQL's READ COMMITTED each could miss
    /// the other's uncommitted write (payments' "intent or early reservation?" check would
    /// then charge nobody). SQLite needs nothing: `BEGIN IMMEDIATE` serializes every writer of
    /// the file, across processes too.
    pub async fn first_delivery<E: Event>(
        &mut self,
        delivered: &Delivered<E>,
    ) -> Result<bool, sqlx::Error> {
        self.lock_aggregate(delivered.event.aggregate_id()).await?;
        self.record_inbox(&delivered.envelope).await
    }

    async fn lock_aggregate(&mut self, aggregate: Uuid) -> Result<(), sqlx::Error> {
        let db = &self.outbox.inner.db;
        if db.engine() == Engine::Postgres {
            let key = aggregate_lock_key(db.module(), aggregate);
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut **self.tx())
                .await?;
        }
        Ok(())
    }

    /// Like [`first_delivery`](Self::first_delivery), for a bare envelope.
    pub async fn record_inbox(&mut self, envelope: &Envelope) -> Result<bool, sqlx::Error> {
        // In a batch, the batch's one inbox statement has recorded it already.
        if let Some(first) = self
            .batch
            .as_ref()
            .and_then(|batch| batch.first_delivery(envelope.message_id))
        {
            return Ok(first);
        }
        let inserted = sqlx::query(
            "INSERT INTO inbox (message_id, subject, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(envelope.message_id.to_string())
        .bind(&envelope.subject)
        .bind(now_millis())
        .execute(&mut **self.tx())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Commits the state change and its events together, then publishes the events.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let staged = std::mem::take(&mut self.staged);
        let on_commit = std::mem::take(&mut self.on_commit);
        let outbox = self.outbox.clone();
        write_rows(self.tx(), &staged, outbox.inner.bus.config().relay_lease_ms).await?;
        if let Some(fault) = outbox.inner.bus.fault_of(outbox.inner.db.module()) {
            // Dropped here (its caller's deadline passed), the transaction rolls back.
            fault.hold_commit().await;
        }
        let tx = self
            .tx
            .take()
            .expect("a unit of work keeps its transaction until it ends");
        let published = async move {
            if !staged.is_empty() {
                // A crash here loses nothing: the rows are committed and the relay sends them.
                failpoint::hit("outbox.after_commit").await;
                outbox.dispatch_committed(staged).await;
            }
            for callback in on_commit {
                callback();
            }
        };
        match self.batch.take() {
            Some(batch) => batch.give_back(tx, Box::pin(published)),
            None => {
                tx.commit().await?;
                published.await;
            }
        }
        Ok(())
    }
}

impl Drop for UnitOfWork {
    fn drop(&mut self) {
        // Outside a batch, dropping the transaction rolls it back. In one, the batch gets its
        // transaction back and must not commit what this handler half did.
        if let (Some(batch), Some(tx)) = (self.batch.take(), self.tx.take()) {
            batch.spoil(tx, "a unit of work ended without a commit");
        }
    }
}

/// Writes the outbox rows of `events` in one statement (per 256 events). The fast path owns
/// each row for one lease; the relay steps in only if it lapses.
async fn write_rows(
    tx: &mut Transaction<'static, Any>,
    events: &[OutgoingEvent],
    lease_ms: u64,
) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 8;
    let lease_until = now_millis() + lease_ms as i64;
    for chunk in events.chunks(256) {
        let sql = format!(
            "INSERT INTO outbox \
             (message_id, subject, aggregate_id, envelope, payload, created_at, claimed_until, attempts) \
             VALUES {}",
            // `attempts` starts at 0 for every row: a parameter like the others.
            banyan_db::values_list(chunk.len(), COLUMNS)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            let envelope = &event.envelope;
            let envelope_json =
                serde_json::to_string(&**envelope).map_err(|e| sqlx::Error::Encode(e.into()))?;
            query = query
                .bind(envelope.message_id.to_string())
                .bind(envelope.subject.clone())
                .bind(event.aggregate.to_string())
                .bind(envelope_json)
                .bind(event.json.as_deref().unwrap_or_default().to_owned())
                .bind(envelope.timestamp_ms)
                .bind(lease_until)
                .bind(0_i64);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl std::ops::Deref for UnitOfWork {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.tx
            .as_ref()
            .expect("a unit of work keeps its transaction until it ends")
    }
}

impl std::ops::DerefMut for UnitOfWork {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.tx()
    }
}

/// How long the relay gathers completions before deleting their rows in one transaction.
const DELETE_LINGER: Duration = Duration::from_millis(5);

/// The module's background loop: deletes delivered rows, resends rows whose lease ran out,
/// and carries out requested dead-letter replays.
struct Relay {
    outbox: Outbox,
}

impl Relay {
    async fn run(
        self,
        mut completions: mpsc::UnboundedReceiver<Uuid>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let inner = &self.outbox.inner;
        let interval = Duration::from_millis(inner.bus.config().relay_interval_ms);
        let mut done = Vec::new();
        // A fixed cadence that completions do not reset: under steady traffic the relay still
        // makes its passes.
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resend = inner.bus.resend_requests();
        // Replays a crash interrupted are asked for again.
        if let Err(error) = dead_letter::reset_interrupted_replays(&inner.db).await {
            tracing::warn!(%error, "Could not resume interrupted dead-letter replays.");
        }
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                received = completions.recv_many(&mut done, 512) => {
                    if received == 0 {
                        break;
                    }
                    // Under load completions come in a stream: a moment's wait lets one
                    // transaction (one fsync) delete the rows of many orders. A row kept a
                    // little longer costs nothing; its lease keeps the relay off it.
                    if done.len() < 512 {
                        tokio::time::sleep(DELETE_LINGER).await;
                        while done.len() < 4_096 && let Ok(id) = completions.try_recv() {
                            done.push(id);
                        }
                    }
                    self.delete_delivered(&mut done).await;
                    continue;
                }
                () = inner.wake.notified() => {}
                Ok(()) = resend.changed() => {
                    // Whatever waited for a module now in rotation goes at once, not when its
                    // lease lapses.
                    if let Err(error) = self.release_leases().await {
                        tracing::warn!(module = inner.db.module(), %error, "Could not release the outbox's leases; its events go when they lapse.");
                    }
                }
                _ = tick.tick() => {}
            }
            if inner.bus.is_closing() {
                continue;
            }
            if let Err(error) = self.resend_expired().await {
                tracing::warn!(module = inner.db.module(), %error, "Outbox relay pass failed; retrying on the next tick.");
            }
            if let Err(error) = self.replay_requested().await {
                tracing::warn!(module = inner.db.module(), %error, "Dead-letter replay pass failed.");
            }
        }
        // Flush what the drained workers completed, so a clean stop resends nothing.
        while let Ok(id) = completions.try_recv() {
            done.push(id);
        }
        self.delete_delivered(&mut done).await;
    }

    async fn delete_delivered(&self, done: &mut Vec<Uuid>) {
        if done.is_empty() {
            return;
        }
        let result = async {
            let mut tx = self.outbox.inner.db.begin().await?;
            for chunk in done.chunks(256) {
                let placeholders: Vec<String> =
                    (1..=chunk.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "DELETE FROM outbox WHERE message_id IN ({})",
                    placeholders.join(", ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(id.to_string());
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        if let Err(error) = result {
            // Harmless: the rows are resent after their lease and the inboxes drop them.
            tracing::warn!(%error, "Could not delete delivered outbox rows.");
        }
        done.clear();
    }

    /// Lets the relay take every row now.
    async fn release_leases(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.outbox.inner.db.begin().await?;
        sqlx::query("UPDATE outbox SET claimed_until = 0 WHERE claimed_until > 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Takes the rows whose lease lapsed (oldest first), renews their lease, and delivers them
    /// again, waiting for queue space: this is where backpressure lands when queues are full.
    async fn resend_expired(&self) -> Result<(), sqlx::Error> {
        let inner = &self.outbox.inner;
        let config = inner.bus.config();
        let now = now_millis();
        let mut tx = inner.db.begin().await?;
        let rows = sqlx::query(
            "UPDATE outbox SET claimed_until = $1, attempts = attempts + 1 \
             WHERE message_id IN (SELECT message_id FROM outbox WHERE claimed_until < $2 \
             ORDER BY message_id LIMIT $3) \
             RETURNING message_id, aggregate_id, envelope, payload",
        )
        .bind(now + config.relay_lease_ms as i64)
        .bind(now)
        .bind(config.relay_batch as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let message_id: String = row.try_get("message_id")?;
            let aggregate: String = row.try_get("aggregate_id")?;
            let envelope: Result<Envelope, _> = serde_json::from_str(row.try_get("envelope")?);
            let (Ok(envelope), Ok(aggregate)) = (envelope, Uuid::parse_str(&aggregate)) else {
                tracing::error!(%message_id, "Outbox row is unreadable; leaving it for an operator.");
                continue;
            };
            let payload: String = row.try_get("payload")?;
            events.push(OutgoingEvent {
                envelope: Arc::new(envelope),
                payload: None,
                json: Some(payload.into()),
                aggregate,
                key: partition_key(aggregate),
            });
        }
        // Oldest first, so one aggregate's events go out in their order.
        events.sort_by_key(|e| e.envelope.message_id);
        if !events.is_empty() {
            tracing::info!(
                module = inner.db.module(),
                count = events.len(),
                "Relay resending outbox events."
            );
        }
        for event in events {
            let ack = self.outbox.ack_for(event.envelope.message_id);
            if let Err(error) = inner.bus.dispatch(&event, Some(&ack), Mode::Wait).await {
                tracing::warn!(%error, "Relay could not deliver an event; it stays in the outbox.");
                break;
            }
        }
        Ok(())
    }

    async fn replay_requested(&self) -> Result<(), sqlx::Error> {
        let inner = &self.outbox.inner;
        // Each letter is claimed (`replaying`) before it is queued, so no pass queues it twice;
        // the worker then marks it `replayed` or `dead` again.
        for letter in dead_letter::claim_replays(&inner.db, 100).await? {
            tracing::info!(module = inner.db.module(), letter = %letter.id, subject = %letter.envelope.subject, "Replaying a dead letter.");
            if let Err(error) = inner.bus.replay(inner.db.module(), &letter).await {
                tracing::warn!(%error, "Could not replay a dead letter; it is dead again.");
                dead_letter::record_failed_replay(
                    &inner.db,
                    letter.id,
                    &format!("replay failed: {error}"),
                    0,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The advisory lock key of one module's aggregate: the aggregate id folded to 64 bits, mixed
/// with the module's name (the lock space is the whole database, shared by every module's
/// schema). A collision only serializes two unrelated transactions.
fn aggregate_lock_key(module: &str, aggregate: Uuid) -> i64 {
    let id = aggregate.as_u128();
    // FNV-1a: stable across builds, unlike std's hasher, so every instance agrees.
    let module_hash = module
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    ((id >> 64) as u64 ^ id as u64 ^ module_hash) as i64
}
