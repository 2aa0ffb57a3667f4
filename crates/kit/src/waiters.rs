//! Request-response over events: clients waiting for an outcome that an event handler will
//! decide (`POST /api/v1/orders?wait_ms=` waits for the checkout saga to end its order).
//!
//! A waiter registers before the work that starts things commits, so that an outcome that
//! comes fast is not missed; the handler that decides [`wake`](Waiters::wake)s the key's
//! waiters after its own commit, handing them the value as it committed (so a waiter need not
//! read it again). When the outcome is decided in another process no handler here runs, so a
//! waiter should also re-read on a timer: the signal is the fast path, the database the truth.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

/// How long an answer waited for an outcome because its client asked it to (a response
/// extension). Time the client chose to wait is not the module being slow: a route breaker
/// counts a call as slow only for the time beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited(pub std::time::Duration);

impl Waited {
    /// The header that carries [`Waited`] from a moved module's process to main's gateway, in
    /// whole milliseconds. One of the bus's `banyan-*` headers: never shown to a client.
    pub const HEADER: &'static str = "banyan-waited-ms";
}

type Waiting<K, V> = HashMap<K, Vec<oneshot::Sender<V>>>;

/// Who waits for which key. Lives as long as the module; entries as long as their waiter.
#[derive(Debug)]
pub struct Waiters<K, V> {
    waiting: Mutex<Waiting<K, V>>,
}

impl<K, V> Default for Waiters<K, V> {
    fn default() -> Self {
        Self {
            waiting: Mutex::default(),
        }
    }
}

impl<K: Hash + Eq + Copy, V: Clone> Waiters<K, V> {
    /// Registers a waiter for `order_id`; it is removed when the [`Watch`] is dropped.
    pub fn watch(self: &Arc<Self>, order_id: K) -> Watch<K, V> {
        let (sender, receiver) = oneshot::channel();
        self.lock().entry(order_id).or_default().push(sender);
        Watch {
            order_id,
            receiver,
            signalled: false,
            waiters: self.clone(),
        }
    }

    /// Tells every waiter of `order_id` its outcome, `row` as it committed.
    pub fn wake(&self, order_id: K, row: &V) {
        let senders = self.lock().remove(&order_id);
        for sender in senders.into_iter().flatten() {
            let _ = sender.send(row.clone());
        }
    }

    /// How many keys have someone waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting<K, V>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client's wait for one key.
#[derive(Debug)]
pub struct Watch<K: Hash + Eq + Copy, V: Clone> {
    order_id: K,
    receiver: oneshot::Receiver<V>,
    /// Whether the signal came (a oneshot may not be polled after it completed).
    signalled: bool,
    waiters: Arc<Waiters<K, V>>,
}

impl<K: Hash + Eq + Copy, V: Clone> Watch<K, V> {
    /// Resolves when the key's waiters are woken (at once if they were before), with the
    /// value. After the first signal it never resolves again.
    pub async fn signalled(&mut self) -> Option<V> {
        if self.signalled {
            return std::future::pending().await;
        }
        let row = (&mut self.receiver).await.ok();
        self.signalled = true;
        row
    }
}

impl<K: Hash + Eq + Copy, V: Clone> Drop for Watch<K, V> {
    fn drop(&mut self) {
        self.receiver.close();
        let mut waiting = self.waiters.lock();
        if let Some(senders) = waiting.get_mut(&self.order_id) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                waiting.remove(&self.order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;

    fn row(_id: Uuid, status: &str) -> String {
        status.to_owned()
    }

    #[tokio::test]
    async fn a_waiter_hears_a_wake_that_came_before_it_listened() {
        let waiters: Arc<Waiters<Uuid, String>> = Arc::new(Waiters::default());
        let id = Uuid::now_v7();
        let mut watch = waiters.watch(id);
        waiters.wake(id, &row(id, "confirmed"));
        let woken = tokio::time::timeout(Duration::from_secs(1), watch.signalled())
            .await
            .expect("the signal was kept");
        assert_eq!(woken.unwrap(), "confirmed");
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_nothing_behind() {
        let waiters: Arc<Waiters<Uuid, String>> = Arc::new(Waiters::default());
        let id = Uuid::now_v7();
        let first = waiters.watch(id);
        let mut second = waiters.watch(id);
        drop(first);
        assert_eq!(waiters.len(), 1);
        let other = Uuid::now_v7();
        waiters.wake(other, &row(other, "confirmed"));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second.signalled())
                .await
                .is_err(),
            "another order's wake is not this one's"
        );
        drop(second);
        assert_eq!(waiters.len(), 0);
    }
}
