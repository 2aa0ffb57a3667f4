//! Clients waiting for the checkout saga to end an order (`POST /api/v1/orders?wait_ms=`).
//!
//! A waiter registers before the order commits, so that an outcome that comes fast is not
//! missed; the saga's event handlers [`wake`](Waiters::wake) the order's waiters after their
//! own commit, handing them the order's row as it committed (so a waiter need not read it
//! again). When the saga ends in another process no handler here runs, so a waiter also
//! re-reads the order on a timer (see `http::await_outcome`): the signal is the fast path,
//! the database the truth.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::store::OrderRow;

type Waiting = HashMap<Uuid, Vec<oneshot::Sender<OrderRow>>>;

/// Who waits for which order. Lives as long as the module; entries as long as their waiter.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    waiting: Mutex<Waiting>,
}

impl Waiters {
    /// Registers a waiter for `order_id`; it is removed when the [`Watch`] is dropped.
    pub(crate) fn watch(self: &Arc<Self>, order_id: Uuid) -> Watch {
        let (sender, receiver) = oneshot::channel();
        self.lock().entry(order_id).or_default().push(sender);
        Watch {
            order_id,
            receiver,
            signalled: false,
            waiters: self.clone(),
        }
    }

    /// Tells every waiter of `order_id` that its saga ended, with the order's row as it
    /// committed.
    pub(crate) fn wake(&self, order_id: Uuid, row: &OrderRow) {
        let senders = self.lock().remove(&order_id);
        for sender in senders.into_iter().flatten() {
            let _ = sender.send(row.clone());
        }
    }

    /// How many orders have someone waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client's wait for one order.
#[derive(Debug)]
pub(crate) struct Watch {
    order_id: Uuid,
    receiver: oneshot::Receiver<OrderRow>,
    /// Whether the signal came (a oneshot may not be polled after it completed).
    signalled: bool,
    waiters: Arc<Waiters>,
}

impl Watch {
    /// Resolves when the order's waiters are woken (at once if they were before), with the
    /// order's row. After the first signal it never resolves again.
    pub(crate) async fn signalled(&mut self) -> Option<OrderRow> {
        if self.signalled {
            return std::future::pending().await;
        }
        let row = (&mut self.receiver).await.ok();
        self.signalled = true;
        row
    }
}

impl Drop for Watch {
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

    use super::*;

    fn row(id: Uuid, status: &str) -> OrderRow {
        OrderRow {
            id: id.to_string(),
            user_id: Uuid::now_v7().to_string(),
            status: status.into(),
            cancel_reason: None,
            total_minor: 1,
            currency: "EUR".into(),
            payment_method: "tok_visa".into(),
            from_cart: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[tokio::test]
    async fn a_waiter_hears_a_wake_that_came_before_it_listened() {
        let waiters = Arc::new(Waiters::default());
        let id = Uuid::now_v7();
        let mut watch = waiters.watch(id);
        waiters.wake(id, &row(id, "confirmed"));
        let woken = tokio::time::timeout(Duration::from_secs(1), watch.signalled())
            .await
            .expect("the signal was kept");
        assert_eq!(woken.unwrap().status, "confirmed");
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_nothing_behind() {
        let waiters = Arc::new(Waiters::default());
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
