//! What a transport's receiving side hands the bus.

use std::{sync::Arc, time::Duration};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{BusError, Envelope, dead_letter, envelope::partition_key, transport::RemoteReply};

use super::{
    Bus,
    events::{Ack, Delivery},
    read, unavailable,
};

/// A transport's handle on the bus of the process it serves: requests and events that arrived
/// as JSON from another process, and messages that cannot be delivered at all.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub(super) bus: &'a Bus,
}

impl Inbound<'_> {
    /// Answers a request that arrived from another process as JSON: the server side of every
    /// transport. The answer is JSON too, or the rejection, intact.
    pub async fn serve_remote_request(
        self,
        envelope: Envelope,
        body: &[u8],
        deadline: Duration,
    ) -> Result<RemoteReply, BusError> {
        let endpoint = read(&self.bus.inner.requests)
            .get(envelope.subject.as_str())
            .cloned();
        let Some(endpoint) = endpoint else {
            return Err(BusError::NoHandler {
                subject: envelope.subject,
            });
        };
        endpoint.call_json(envelope, body, deadline).await
    }

    /// Delivers an event that arrived from another process to this process's subscribers,
    /// decoding it in each. Returns once every local subscriber has handled or dead-lettered it;
    /// `NoHandler` if nothing here subscribes to it.
    pub async fn deliver_remote_event(
        self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        self.deliver_remote(envelope, json, aggregate, None).await
    }

    /// Like [`deliver_remote_event`](Self::deliver_remote_event), to one subscribing module
    /// only: a broker that keeps one consumer per module hands each module its own copy.
    pub async fn deliver_remote_event_to(
        self,
        group: &str,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        self.deliver_remote(envelope, json, aggregate, Some(group))
            .await
    }

    async fn deliver_remote(
        self,
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
        let subscribers = read(&self.bus.inner.subscriptions)
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
            let partition = subscription.group.partition(partition_key(aggregate));
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

    /// Records a message that arrived from the wire but cannot be delivered at all (bad JSON,
    /// unknown subject or version) in module `group`'s dead letters, so an operator sees it.
    /// Returns `false` when the group has no store here.
    pub async fn dead_letter_received(
        self,
        group: &str,
        envelope: &Envelope,
        payload: &str,
        error: &str,
    ) -> Result<bool, banyan_db::sqlx::Error> {
        let store = read(&self.bus.inner.groups)
            .get(group)
            .and_then(|g| g.store.get().cloned());
        let Some(db) = store else {
            return Ok(false);
        };
        dead_letter::record(&db, group, envelope, payload, error, 1).await?;
        Ok(true)
    }
}
