//! The client side: requests to one instance of a module, events pushed to every subscribing
//! module, each instance reached over one HTTP/2 connection (a tonic `Channel`).

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::http::{HeaderMap, HeaderValue, header};
use banyan_message::Rejection;
use bytes::Bytes;
use futures::future::BoxFuture;
use tonic::{
    Code, Status,
    metadata::MetadataMap,
    transport::{Channel, ClientTlsConfig, Endpoint},
};
use uuid::Uuid;

use super::{
    error_of,
    generated::bus_client::BusClient,
    messages::{CallReply, CallRequest, EventPush, Outcome},
};
use crate::{
    BusError, Envelope, RemoteReply, Transport,
    balance::Balancer,
    direct::{self, Attempt, Push, error_chain, timeout, unavailable},
    http::{DEADLINE_MS, HttpTransportConfig, Instances, Peers, Subscribers, envelope_headers},
};

/// The client side of the gRPC adapter. See the [module docs](super).
pub struct GrpcTransport {
    instances: Arc<dyn Instances>,
    subscribers: Arc<dyn Subscribers>,
    /// This process's credential, sent with every call.
    peers: Arc<dyn Peers>,
    /// Connect timeout, event timeout and the retries of a push (shared with HTTP).
    config: HttpTransportConfig,
    /// The authority to trust when instances are reached over `https://`.
    tls: Option<ClientTlsConfig>,
    /// Which instance of each module is next.
    /// Which instance of each module a call goes to (`with_balance`).
    balancer: Arc<Balancer>,
    /// One channel (one HTTP/2 connection, reconnected when lost) per instance URL. Bounded:
    /// instances come and go. (Four per instance, taken in turn, were measured: no more calls
    /// per second at 16 callers, fewer at one; see ADR 0008.)
    channels: RwLock<HashMap<String, Channel>>,
}

impl fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// A transport that finds modules through `instances` (the base URLs of their internal
    /// listeners), sends events to the modules `subscribers` names, and presents the
    /// credential of `peers`.
    pub fn new(
        instances: Arc<dyn Instances>,
        subscribers: Arc<dyn Subscribers>,
        peers: Arc<dyn Peers>,
        config: HttpTransportConfig,
    ) -> Self {
        Self {
            instances,
            subscribers,
            peers,
            config,
            tls: None,
            balancer: Arc::default(),
            channels: RwLock::default(),
        }
    }

    /// The same transport sharing calls among a module's instances as `balancer` says.
    pub fn with_balance(mut self, balancer: Arc<Balancer>) -> Self {
        self.balancer = balancer;
        self
    }

    /// The same transport trusting `tls`'s authority for `https://` instances.
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The channel to the instance at `base`, made the first time (it connects on first use).
    fn channel(&self, base: &str) -> Result<Channel, String> {
        const MOST: usize = 4_096;
        if let Some(channel) = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(base)
        {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(base.to_owned())
            .map_err(|e| format!("`{base}` is no URL: {e}"))?
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms.max(1)))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for `{base}`: {}", error_chain(&e)))?;
        }
        let channel = endpoint.connect_lazy();
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        if channels.len() >= MOST {
            channels.clear();
        }
        channels.insert(base.to_owned(), channel.clone());
        Ok(channel)
    }

    /// The envelope's headers and this process's credential, which every call carries.
    fn headers(&self, envelope: &Envelope) -> Result<HeaderMap, BusError> {
        let mut headers = envelope_headers(envelope)?;
        headers.insert(header::AUTHORIZATION, self.peers.credential());
        Ok(headers)
    }

    async fn send_request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> Result<RemoteReply, BusError> {
        let subject = envelope.subject.as_str();
        let headers = &self.headers(&envelope)?;
        let body = &Bytes::from_owner(body);
        direct::request_any(
            self.instances.instances(banyan_message::module_of(subject)),
            &self.balancer,
            subject,
            Some(envelope.correlation_id.as_str()),
            deadline,
            |base, remaining| async move {
                let channel = match self.channel(&base) {
                    Ok(channel) => channel,
                    Err(reason) => return Attempt::Refused(reason),
                };
                let mut headers = headers.clone();
                headers.insert(
                    DEADLINE_MS,
                    HeaderValue::from(remaining.as_millis().max(1) as u64),
                );
                let mut request = tonic::Request::from_parts(
                    MetadataMap::from_headers(headers),
                    Default::default(),
                    CallRequest {
                        subject: subject.to_owned(),
                        body: body.clone(),
                    },
                );
                request.set_timeout(remaining);
                let mut client = BusClient::new(channel).max_decoding_message_size(usize::MAX);
                let sent = std::time::Instant::now();
                match tokio::time::timeout(remaining, client.request(request)).await {
                    // It may have reached the handler: not retried.
                    Err(_) => Attempt::Answered(Err(timeout(subject, deadline))),
                    // tonic's channel enforces the call's own `grpc-timeout` too, and may be
                    // first to give up (`CANCELLED`, "Timeout expired"): the same timeout.
                    Ok(Err(_)) if sent.elapsed() >= remaining => {
                        Attempt::Answered(Err(timeout(subject, deadline)))
                    }
                    Ok(Ok(reply)) => Attempt::Answered(reply_of(reply.into_inner(), subject)),
                    Ok(Err(status)) if never_sent(&status) => {
                        Attempt::Refused(error_chain(&status))
                    }
                    Ok(Err(status)) => Attempt::Answered(Err(error_of(&status, subject, deadline))),
                }
            },
        )
        .await
    }

    async fn send_event(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        let modules = self.subscribers.modules_for(&envelope.subject);
        if modules.is_empty() {
            return Ok(());
        }
        let subject = envelope.subject.as_str();
        let headers = &self.headers(&envelope)?;
        let push = &EventPush {
            subject: subject.to_owned(),
            module: String::new(),
            aggregate_id: aggregate.to_string(),
            body: Bytes::from_owner(json.as_bytes().to_vec()),
        };
        direct::push_to_all(subject, &modules, |module| {
            direct::push_with_retries(
                self.config.retries(),
                || self.instances.instances(module),
                &self.balancer,
                module,
                subject,
                move |base| self.push_once(base, module, headers, push),
            )
        })
        .await
    }

    /// One push of an event to the instance at `base`, for `module` there.
    async fn push_once(
        &self,
        base: String,
        module: &str,
        headers: &HeaderMap,
        push: &EventPush,
    ) -> Push {
        let subject = push.subject.as_str();
        let channel = match self.channel(&base) {
            Ok(channel) => channel,
            Err(reason) => return Push::Retry(format!("{base}: {reason}")),
        };
        let request = tonic::Request::from_parts(
            MetadataMap::from_headers(headers.clone()),
            Default::default(),
            EventPush {
                module: module.to_owned(),
                ..push.clone()
            },
        );
        let timeout_after = Duration::from_millis(self.config.event_timeout_ms.max(1));
        let mut client = BusClient::new(channel);
        let status = match tokio::time::timeout(timeout_after, client.push_event(request)).await {
            Ok(Ok(_)) => return Push::Done,
            // The receiver may still be handling it; the relay resends after its lease.
            Err(_) => return Push::Fail(timeout(subject, timeout_after)),
            Ok(Err(status)) => status,
        };
        let reason = format!("{base} answered {:?}: {}", status.code(), status.message());
        match status.code() {
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::Aborted
            | Code::Cancelled => Push::Retry(format!("{reason} ({})", error_chain(&status))),
            Code::InvalidArgument | Code::OutOfRange => Push::Fail(BusError::Codec {
                subject: subject.into(),
                reason,
            }),
            Code::NotFound => Push::Fail(BusError::NoHandler {
                subject: subject.into(),
            }),
            Code::DeadlineExceeded => Push::Fail(timeout(subject, timeout_after)),
            _ => Push::Fail(unavailable(subject, reason)),
        }
    }
}

/// Whether the call failed before anything reached the instance: no connection could be made
/// (refused, or no such host). Only then is the next instance safe to try.
fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return true;
            }
        }
        cause = error.source();
    }
    false
}

/// The handler's answer, from the reply's outcome.
fn reply_of(reply: CallReply, subject: &str) -> Result<RemoteReply, BusError> {
    match reply.outcome {
        Some(Outcome::Ok(json)) => Ok(RemoteReply::Ok(Arc::from(&json[..]))),
        Some(Outcome::Rejected(json)) => serde_json::from_slice::<Rejection>(&json)
            .map(RemoteReply::Rejected)
            .map_err(|error| BusError::Codec {
                subject: subject.into(),
                reason: format!("an unreadable rejection: {error}"),
            }),
        None => Err(BusError::Codec {
            subject: subject.into(),
            reason: "a reply without an outcome".into(),
        }),
    }
}

impl Transport for GrpcTransport {
    fn placement(&self) -> &'static str {
        "grpc"
    }

    fn request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<RemoteReply, BusError>> {
        Box::pin(self.send_request(envelope, body, deadline))
    }

    fn publish(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(self.send_event(envelope, json, aggregate))
    }
}
