//! The seam between the bus and the network.
//!
//! In process the bus moves typed values. A module hosted elsewhere is reached through a
//! [`Transport`]: the bus encodes the message as JSON and hands it over with its envelope.
//! HTTP and NATS adapters implement this trait; no module code changes when they are used.

use std::{sync::Arc, time::Duration};

use banyan_message::Rejection;
use futures::future::BoxFuture;

use crate::{BusError, Envelope};

/// How a remote handler answered: its JSON response, or its rejection, intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteReply {
    Ok(Arc<[u8]>),
    Rejected(Rejection),
}

/// A way to reach modules in other processes.
pub trait Transport: Send + Sync + 'static {
    /// How it carries messages, as the bus's metrics label the calls it makes (`http`,
    /// `grpc`, `nats`).
    fn placement(&self) -> &'static str;

    /// Sends a request to the module hosting `envelope.subject` and waits for its reply.
    fn request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<RemoteReply, BusError>>;

    /// Hands an event to the subscribers in other processes. `Ok` means the transport has
    /// taken responsibility for it (a broker acknowledged it, or every endpoint accepted it).
    /// `aggregate` is the event's aggregate id: receivers partition by it to keep its order.
    fn publish(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: uuid::Uuid,
    ) -> BoxFuture<'_, Result<(), BusError>>;
}
