//! Group commit: one transaction for the events waiting in a worker's queue.
//!
//! An event worker that finds several deliveries waiting in its partition handles them in one
//! write transaction: one `BEGIN`, one statement recording every message id in the inbox, each
//! handler's own statements, and one `COMMIT` (one fsync) for all of them. The handlers do not
//! change: [`Outbox::begin_handling`](crate::Outbox::begin_handling) called inside a batch
//! hands out a unit of work that borrows the batch's transaction and, at its `commit`, gives it
//! back with what must happen once the batch has committed (the fast path of its events, the
//! module's `on_commit` callbacks).
//!
//! The batch is optimistic: no savepoints (each would be two more statements per handler).
//! If any handler fails, panics, or drops its unit of work without committing, the whole batch
//! is rolled back and the worker delivers the same events one by one, each in a transaction
//! of its own, with the usual retries and dead letters. A rolled-back handler left no trace,
//! so running it again is what a retry always was. Under light traffic a queue rarely holds
//! more than one delivery and nothing changes; under load the queues fill while the module's
//! writer is busy, and the batches grow with them. See ADR 0007.

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
};

use banyan_db::{now_millis, sqlx};
use futures::future::BoxFuture;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

tokio::task_local! {
    /// The batch the current event handler runs in, if it runs in one.
    static CURRENT: Arc<Batch>;
}

/// What must happen once the batch's transaction has committed.
pub(crate) type AfterCommit = BoxFuture<'static, ()>;

/// Message ids per inbox statement (three parameters each, well under SQLite's limit).
const INBOX_CHUNK: usize = 256;

/// The shared transaction of one worker's batch.
pub(crate) struct Batch {
    module: &'static str,
    /// The deliveries of this batch, by message id.
    members: HashSet<Uuid>,
    state: Mutex<State>,
}

struct State {
    /// `None` while a handler's unit of work holds it (or once it is gone).
    tx: Option<Transaction<'static, Any>>,
    /// Message ids this module had not handled before, each given out once.
    fresh: HashSet<Uuid>,
    /// Why the batch cannot commit, once something went wrong.
    spoiled: Option<&'static str>,
    after_commit: Vec<AfterCommit>,
}

impl Batch {
    /// Starts a batch on `tx`, a write transaction of `module`'s database, and records every
    /// message id in the module's inbox.
    pub(crate) async fn begin(
        module: &'static str,
        mut tx: Transaction<'static, Any>,
        messages: &[(Uuid, &str)],
    ) -> Result<Arc<Self>, sqlx::Error> {
        let members: HashSet<Uuid> = messages.iter().map(|(id, _)| *id).collect();
        // One row per message id, even when a chaos run queued one twice.
        let mut seen = HashSet::with_capacity(members.len());
        let unique: Vec<&(Uuid, &str)> = messages.iter().filter(|m| seen.insert(m.0)).collect();
        let mut fresh = HashSet::with_capacity(unique.len());
        let received_at = now_millis();
        for chunk in unique.chunks(INBOX_CHUNK) {
            let sql = format!(
                "INSERT INTO inbox (message_id, subject, received_at) VALUES {} \
                 ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                banyan_db::values_list(chunk.len(), 3)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, subject) in chunk {
                query = query.bind(id.to_string()).bind(*subject).bind(received_at);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let id: String = row.try_get(0)?;
                if let Ok(id) = Uuid::parse_str(&id) {
                    fresh.insert(id);
                }
            }
        }
        Ok(Arc::new(Self {
            module,
            members,
            state: Mutex::new(State {
                tx: Some(tx),
                fresh,
                spoiled: None,
                after_commit: Vec::new(),
            }),
        }))
    }

    /// Runs `work` (one handler) inside this batch.
    pub(crate) async fn run<F: Future>(self: &Arc<Self>, work: F) -> F::Output {
        CURRENT.scope(self.clone(), work).await
    }

    /// The batch the current handler runs in, if it runs in one of `module`'s.
    pub(crate) fn joined(module: &str) -> Option<Arc<Self>> {
        CURRENT
            .try_with(|batch| (batch.module == module).then(|| batch.clone()))
            .ok()
            .flatten()
    }

    /// Lends the transaction to a handler's unit of work.
    pub(crate) fn lend(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let mut state = self.lock();
        match state.tx.take() {
            Some(tx) => Ok(tx),
            // Waiting for the writer the batch holds would never end: refuse, and let the
            // batch fall back to one transaction per event.
            None => {
                state.spoiled = Some("a handler opened a second unit of work at once");
                Err(sqlx::Error::Protocol(
                    "the batch's transaction is already lent".into(),
                ))
            }
        }
    }

    /// Whether this is the first delivery of `message_id` to the module: the batch's inbox
    /// statement answered, once per message id. `None` if the message is not in the batch.
    pub(crate) fn first_delivery(&self, message_id: Uuid) -> Option<bool> {
        self.members
            .contains(&message_id)
            .then(|| self.lock().fresh.remove(&message_id))
    }

    /// Takes the transaction back from a handler that committed its unit of work, with what
    /// must happen after the batch commits.
    pub(crate) fn give_back(&self, tx: Transaction<'static, Any>, after_commit: AfterCommit) {
        let mut state = self.lock();
        state.tx = Some(tx);
        state.after_commit.push(after_commit);
    }

    /// Takes the transaction back from a unit of work dropped without a commit: what it wrote
    /// cannot be told apart from the others' writes, so the batch must not commit.
    pub(crate) fn spoil(&self, tx: Transaction<'static, Any>, why: &'static str) {
        let mut state = self.lock();
        state.tx = Some(tx);
        state.spoiled.get_or_insert(why);
    }

    /// Why the batch cannot commit, if it cannot.
    pub(crate) fn spoiled(&self) -> Option<&'static str> {
        self.lock().spoiled
    }

    /// Commits every handler's work at once, then runs what each asked for after the commit,
    /// in the order they committed.
    pub(crate) async fn commit(&self) -> Result<(), sqlx::Error> {
        let (tx, after_commit) = {
            let mut state = self.lock();
            if let Some(why) = state.spoiled {
                return Err(sqlx::Error::Protocol(why.into()));
            }
            let Some(tx) = state.tx.take() else {
                return Err(sqlx::Error::Protocol(
                    "a handler kept the batch's transaction".into(),
                ));
            };
            (tx, std::mem::take(&mut state.after_commit))
        };
        tx.commit().await?;
        for after in after_commit {
            after.await;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
