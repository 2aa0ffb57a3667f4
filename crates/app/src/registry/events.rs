//! Events pushed to the modules elsewhere (over HTTP or gRPC), once the subscriptions of every
//! one of them are known.

use std::{sync::Arc, time::Duration};

use banyan_bus::{BusError, Envelope, RemoteReply, Transport, http::Subscribers};
use futures::future::BoxFuture;

/// Knows which modules elsewhere subscribe to what, and which it cannot tell yet.
pub(crate) trait Awareness: Subscribers {
    /// The modules hosted elsewhere whose subscriptions are not known yet.
    fn unknown(&self) -> Vec<String>;
}

/// The event side of a transport that pushes (HTTP, gRPC): forwards an event only once the subscriptions of
/// every module elsewhere are known, so that no module misses an event because it registered
/// late (nor gets one it does not subscribe to). Until then `publish` fails and the outbox
/// keeps the event for its relay.
pub(crate) struct PushedEvents {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) awareness: Arc<dyn Awareness>,
}

impl std::fmt::Debug for PushedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushedEvents").finish_non_exhaustive()
    }
}

impl Transport for PushedEvents {
    fn placement(&self) -> &'static str {
        self.transport.placement()
    }

    fn request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<RemoteReply, BusError>> {
        self.transport.request(envelope, body, deadline)
    }

    fn publish(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: uuid::Uuid,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        let unknown = self.awareness.unknown();
        if !unknown.is_empty() {
            let subject = envelope.subject;
            return Box::pin(async move {
                Err(BusError::Unavailable {
                    subject,
                    reason: format!(
                        "waiting for module(s) {} to register their subscriptions",
                        unknown.join(", ")
                    ),
                })
            });
        }
        self.transport.publish(envelope, json, aggregate)
    }
}
