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

/// What became of an event another process pushed to one module here: the pusher's
/// acknowledgement, for every transport that pushes (HTTP, gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Handled by the module's worker (or dead-lettered by it after its last attempt).
    Delivered,
    /// Poison (a subject or version the module does not subscribe to, a body that is not
    /// JSON): kept in the module's dead letters, since a retry would fail the same way.
    DeadLettered,
    /// Poison, and the module has no dead-letter store here: logged as an error and dropped.
    Dropped,
}

impl Accepted {
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::Delivered => "delivered",
            Accepted::DeadLettered => "dead_lettered",
            Accepted::Dropped => "dropped",
        }
    }
}

/// A transport's handle on the bus of the process it serves: requests and events that arrived
/// as JSON from another process, and messages that cannot be delivered at all.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub(super) bus: &'a Bus,
    /// The transport it arrived by, as the metrics label it (`http`, `grpc`, `nats`).
    pub(super) via: &'static str,
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
        let answer = endpoint.call_json(envelope, body, deadline).await;
        crate::meters::handled(endpoint.subject(), self.via, &answer);
        answer
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
                via: self.via,
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

    /// Takes an event another process pushed to `module` here, and answers only once it is
    /// safe: handled by the module's worker (in order with the aggregate's other events,
    /// through the module's inbox) or kept in its dead letters. The error says whether a retry
    /// can help:
    /// - [`BusError::NoHandler`]: the module subscribes to nothing in this process (the
    ///   pusher's directory is stale: the module moved, or the address was recycled);
    /// - [`BusError::Unavailable`]: shutting down, or the worker failed every attempt and not
    ///   even the dead letter could be stored; the pusher retries, then its relay resends.
    pub async fn accept_pushed_event(
        self,
        module: &str,
        envelope: Envelope,
        body: &[u8],
        aggregate: Uuid,
    ) -> Result<Accepted, BusError> {
        let subject = envelope.subject.clone();
        let wiring = self.bus.wiring();
        if !wiring.groups().contains(&module) {
            tracing::warn!(%subject, module, "Refused a bus event: that module subscribes to nothing in this process.");
            return Err(BusError::NoHandler { subject });
        }
        if self.bus.is_closing() {
            return Err(unavailable(&subject, "the bus is shutting down"));
        }
        // Poison: retrying it would fail the same way forever, so it goes to dead letters now.
        let poison = if !wiring.subscriptions_of(module).contains(&subject.as_str()) {
            Some(format!(
                "module `{module}` has no subscriber for `{subject}` (unknown subject or version)"
            ))
        } else {
            match std::str::from_utf8(body) {
                Err(_) => Some("undecodable: the body is not UTF-8".to_owned()),
                Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .err()
                    .map(|error| format!("undecodable: {error}")),
            }
        };
        let message_id = envelope.message_id;
        let correlation_id = envelope.correlation_id.clone();
        if let Some(reason) = poison {
            tracing::warn!(%subject, module, %message_id, %correlation_id, reason, "A bus event from another process cannot be delivered; dead-lettering it.");
            let payload = String::from_utf8_lossy(body);
            return match self
                .dead_letter_received(module, &envelope, &payload, &reason)
                .await
            {
                Ok(true) => Ok(Accepted::DeadLettered),
                Ok(false) => {
                    tracing::error!(%subject, module, %message_id, "No dead-letter store for this module; the event is dropped.");
                    Ok(Accepted::Dropped)
                }
                // Not stored: the sender keeps the event and tries again later.
                Err(error) => {
                    tracing::error!(%subject, module, %message_id, %error, "Could not store a dead letter.");
                    Err(unavailable(&subject, "could not store the dead letter"))
                }
            };
        }
        // Delivered to this one module's worker and awaited: the worker retries with backoff and
        // dead-letters after its last attempt, so `Ok` means handled or kept, never lost.
        let json: Arc<str> = String::from_utf8_lossy(body).into();
        match self
            .deliver_remote_event_to(module, envelope, json, aggregate)
            .await
        {
            Ok(()) => Ok(Accepted::Delivered),
            Err(error) => {
                tracing::warn!(%subject, module, %message_id, %correlation_id, %error, "Could not deliver a bus event from another process.");
                Err(error)
            }
        }
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
