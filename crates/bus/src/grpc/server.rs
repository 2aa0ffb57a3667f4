//! The receiving side: `banyan.bus.v1.Bus` served into this process's bus.

use std::sync::Arc;

use axum::{Router, http::HeaderMap};
use tonic::{Request, Response, Status, server::NamedService};
use uuid::Uuid;

use super::{
    generated::bus_server::{Bus as BusService, BusServer},
    messages::{CallReply, CallRequest, EventAck, EventPush, Outcome},
    status_of,
};
use crate::{
    Bus, RemoteReply,
    http::{
        MAX_BODY_BYTES, MessageKind, Peers, envelope_from_headers,
        server::{Refusal, authenticate, deadline_from, permit},
    },
};

/// The service's routes, to merge into the internal listener's router (which must speak
/// HTTP/2). Every call must carry a credential `peers` accepts, from a process it permits the
/// subject.
pub fn routes(bus: Bus, peers: Arc<dyn Peers>) -> Router {
    // A little over the body limit, for the message's own fields.
    const MOST: usize = MAX_BODY_BYTES + 4 * 1024;
    let service = BusServer::new(Server { bus, peers })
        .max_decoding_message_size(MOST)
        .max_encoding_message_size(usize::MAX);
    Router::new().route_service(
        &format!("/{}/{{*method}}", BusServer::<Server>::NAME),
        service,
    )
}

struct Server {
    bus: Bus,
    peers: Arc<dyn Peers>,
}

fn refused(refusal: Refusal) -> Status {
    status_of(refusal.kind, refusal.reason)
}

/// A malformed call: logged with its reason, answered `INVALID_ARGUMENT`.
fn malformed(what: &str, subject: &str, reason: String) -> Status {
    tracing::warn!(subject, %reason, "Refused a bus {what} over gRPC: it is incomplete or malformed.");
    Status::invalid_argument(reason)
}

impl Server {
    /// Checks the caller (its credential in the call's metadata) and its right to hand in a
    /// `kind` on `subject`.
    fn admit(
        &self,
        headers: &HeaderMap,
        kind: MessageKind,
        subject: &str,
        route: &str,
    ) -> Result<(), Status> {
        let peer = authenticate(&*self.peers, headers, route).map_err(refused)?;
        permit(&*self.peers, &peer, kind, subject).map_err(refused)
    }
}

#[tonic::async_trait]
impl BusService for Server {
    async fn request(&self, request: Request<CallRequest>) -> Result<Response<CallReply>, Status> {
        const ROUTE: &str = "banyan.bus.v1.Bus/Request";
        let (metadata, _, call) = request.into_parts();
        let headers = metadata.into_headers();
        if call.subject.is_empty() {
            return Err(malformed("request", "", "the subject is empty".into()));
        }
        let subject = call.subject;
        self.admit(&headers, MessageKind::Request, &subject, ROUTE)?;
        let envelope = envelope_from_headers(&headers, &subject)
            .map_err(|reason| malformed("request", &subject, reason))?;
        let deadline = deadline_from(&headers, &self.bus)
            .map_err(|reason| malformed("request", &subject, reason))?;
        let correlation_id = envelope.correlation_id.clone();
        match self
            .bus
            .inbound("grpc")
            .serve_remote_request(envelope, &call.body, deadline)
            .await
        {
            Ok(RemoteReply::Ok(json)) => Ok(Response::new(CallReply {
                outcome: Some(Outcome::Ok(bytes::Bytes::from_owner(json))),
            })),
            Ok(RemoteReply::Rejected(rejection)) => {
                let json = serde_json::to_vec(&rejection)
                    .map_err(|e| Status::internal(format!("cannot encode the rejection: {e}")))?;
                Ok(Response::new(CallReply {
                    outcome: Some(Outcome::Rejected(json.into())),
                }))
            }
            Err(error) => {
                tracing::warn!(%subject, %correlation_id, %error, "A bus request from another process failed.");
                Err(status_of(error.kind(), error.to_string()))
            }
        }
    }

    async fn push_event(&self, request: Request<EventPush>) -> Result<Response<EventAck>, Status> {
        const ROUTE: &str = "banyan.bus.v1.Bus/PushEvent";
        let (metadata, _, push) = request.into_parts();
        let headers = metadata.into_headers();
        if push.subject.is_empty() {
            return Err(malformed("event", "", "the subject is empty".into()));
        }
        let subject = push.subject;
        self.admit(&headers, MessageKind::Event, &subject, ROUTE)?;
        if push.module.is_empty() {
            return Err(malformed("event", &subject, "the module is empty".into()));
        }
        let envelope = envelope_from_headers(&headers, &subject)
            .map_err(|reason| malformed("event", &subject, reason))?;
        let aggregate = Uuid::parse_str(&push.aggregate_id)
            .map_err(|_| malformed("event", &subject, "the aggregate id is not a UUID".into()))?;
        match self
            .bus
            .inbound("grpc")
            .accept_pushed_event(&push.module, envelope, &push.body, aggregate)
            .await
        {
            Ok(accepted) => Ok(Response::new(EventAck {
                status: accepted.as_str().to_owned(),
            })),
            Err(error) => Err(status_of(error.kind(), error.to_string())),
        }
    }
}
