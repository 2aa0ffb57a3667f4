//! The client side: requests to one instance of a module, events pushed to every subscribing module.

use super::*;
use crate::{
    balance::Balancer,
    direct::{self, Attempt, Push, error_chain, timeout, unavailable},
};
use banyan_message::module_of;

/// Tunables of the HTTP client side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTransportConfig {
    /// How long to wait for a TCP connection before trying the next instance.
    pub connect_timeout_ms: u64,
    /// How long one push of an event may take (the receiver answers once it has handled it).
    pub event_timeout_ms: u64,
    /// Attempts per subscribing module inside one `publish`, the first included.
    pub publish_attempts: u32,
    /// First pause between attempts; each doubles it, with jitter, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for HttpTransportConfig {
    fn default() -> Self {
        // At most 0.2 + 0.4 + 0.8 + 1.6 s of pauses: a few seconds, then the relay's turn.
        Self {
            connect_timeout_ms: 1_000,
            event_timeout_ms: 30_000,
            publish_attempts: 5,
            backoff_base_ms: 200,
            backoff_max_ms: 2_000,
        }
    }
}

impl HttpTransportConfig {
    /// How a push is retried, for every adapter that pushes (the pauses: see [`Backoff`]).
    pub(crate) fn retries(&self) -> direct::Retries {
        direct::Retries {
            attempts: self.publish_attempts,
            backoff: Backoff::new(
                Duration::from_millis(self.backoff_base_ms),
                Duration::from_millis(self.backoff_max_ms),
            ),
        }
    }
}

/// Why an [`HttpTransport`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("the bus's shared secret must be non-empty visible ASCII")]
    BadSecret,
    #[error("could not build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A `reqwest` client builder for calls between processes (never through an environment's
/// proxy). Every HTTP client of Banyan starts here: it makes rustls's `ring` provider the
/// process's default first, which `reqwest` needs (Banyan builds it without a provider of its
/// own, so as not to compile a second one).
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Err only if a default is installed already: then that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    // No redirects: a call between processes that answered 3xx went somewhere unexpected, and
    // following it would carry this process's credential there (the gateway's client, which
    // passes a module's redirect on to its caller as it came, says so too).
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
}

/// The client side of the HTTP adapter. See the [module docs](self).
pub struct HttpTransport {
    client: reqwest::Client,
    instances: Arc<dyn Instances>,
    subscribers: Arc<dyn Subscribers>,
    /// This process's credential, sent with every call.
    peers: Arc<dyn Peers>,
    config: HttpTransportConfig,
    /// Which instance of each module is next.
    /// Which instance of each module a call goes to (`with_balance`).
    balancer: Arc<Balancer>,
    /// The URLs called, parsed once: parsing one per call was a tenth of a call's client-side
    /// work (callgrind). Bounded: instances come and go.
    urls: RwLock<HashMap<String, reqwest::Url>>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// The same transport calling through `client` (say one that trusts the topology's own
    /// certificate authority); it should keep `no_proxy` and a connect timeout.
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// A transport that finds modules through `instances`, sends events to the modules
    /// `subscribers` names, and presents the credential of `peers`.
    pub fn new(
        instances: Arc<dyn Instances>,
        subscribers: Arc<dyn Subscribers>,
        peers: Arc<dyn Peers>,
        config: HttpTransportConfig,
    ) -> Result<Self, HttpSetupError> {
        let client = client_builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            instances,
            subscribers,
            peers,
            config,
            balancer: Arc::default(),
            urls: RwLock::default(),
        })
    }

    /// The same transport sharing calls among a module's instances as `balancer` says.
    pub fn with_balance(mut self, balancer: Arc<Balancer>) -> Self {
        self.balancer = balancer;
        self
    }

    /// `base` + `path` as a URL, parsed the first time only.
    fn url(&self, base: &str, path: &str) -> Result<reqwest::Url, String> {
        const MOST: usize = 4_096;
        let text = format!("{}{path}", base.trim_end_matches('/'));
        if let Some(url) = self
            .urls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&text)
        {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(&text).map_err(|e| format!("`{text}` is no URL: {e}"))?;
        let mut urls = self.urls.write().unwrap_or_else(|e| e.into_inner());
        if urls.len() >= MOST {
            urls.clear();
        }
        urls.insert(text, url.clone());
        Ok(url)
    }

    async fn send_request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> Result<RemoteReply, BusError> {
        let subject = envelope.subject.clone();
        let headers = envelope_headers(&envelope)?;
        let body = Bytes::from_owner(body);
        let (headers, body, subject_ref) = (&headers, &body, subject.as_str());
        direct::request_any(
            self.instances.instances(module_of(subject_ref)),
            &self.balancer,
            subject_ref,
            Some(envelope.correlation_id.as_str()),
            deadline,
            |base, remaining| async move {
                // Not even a URL: nothing was sent, the next one is safe.
                let url = match self.url(&base, &request_path(subject_ref)) {
                    Ok(url) => url,
                    Err(reason) => return Attempt::Refused(reason),
                };
                let sent = self
                    .client
                    .post(url)
                    .headers(headers.clone())
                    .header(header::AUTHORIZATION, self.peers.credential())
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(DEADLINE_MS, remaining.as_millis().max(1).to_string())
                    .timeout(remaining)
                    .body(body.clone())
                    .send()
                    .await;
                Attempt::Answered(match sent {
                    Ok(response) => read_reply(response, subject_ref, deadline).await,
                    // Not connected: nothing was sent, the next one is safe.
                    Err(error) if error.is_connect() || error.is_builder() => {
                        return Attempt::Refused(error_chain(&error));
                    }
                    Err(error) if error.is_timeout() => Err(timeout(subject_ref, deadline)),
                    // It may have reached the handler: not retried.
                    Err(error) => Err(unavailable(
                        subject_ref,
                        format!("{base}: {}", error_chain(&error)),
                    )),
                })
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
        let mut headers = envelope_headers(&envelope)?;
        headers.insert(
            HeaderName::from_static(AGGREGATE_ID),
            HeaderValue::from_str(&aggregate.to_string()).map_err(|_| BusError::Codec {
                subject: envelope.subject.clone(),
                reason: "the aggregate id is not a valid header value".into(),
            })?,
        );
        headers.insert(header::AUTHORIZATION, self.peers.credential());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::from_owner(json.as_bytes().to_vec());
        direct::push_to_all(&envelope.subject, &modules, |module| {
            self.push_to_module(module, &envelope.subject, &headers, &body)
        })
        .await
    }

    /// Pushes an event to one instance of `module`, retrying with backoff.
    async fn push_to_module(
        &self,
        module: &str,
        subject: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), BusError> {
        direct::push_with_retries(
            self.config.retries(),
            || self.instances.instances(module),
            &self.balancer,
            module,
            subject,
            |base| async move { self.push_once(&base, module, subject, headers, body).await },
        )
        .await
    }

    async fn push_once(
        &self,
        base: &str,
        module: &str,
        subject: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Push {
        let mut url = match self.url(base, &event_path(subject)) {
            Ok(url) => url,
            Err(reason) => return Push::Retry(format!("{base}: {reason}")),
        };
        url.query_pairs_mut().append_pair("module", module);
        let timeout_after = Duration::from_millis(self.config.event_timeout_ms.max(1));
        let sent = self
            .client
            .post(url)
            .headers(headers.clone())
            .timeout(timeout_after)
            .body(body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // The receiver may still be handling it; the relay resends after its lease.
            Err(error) if error.is_timeout() && !error.is_connect() => {
                return Push::Fail(timeout(subject, timeout_after));
            }
            Err(error) => return Push::Retry(format!("{base}: {}", error_chain(&error))),
        };
        let status = response.status();
        if status.is_success() {
            return Push::Done;
        }
        let reason = match response.bytes().await {
            Ok(body) => error_reason(&body).unwrap_or_else(|| status.to_string()),
            Err(_) => status.to_string(),
        };
        let reason = format!("{base} answered {}: {reason}", status.as_u16());
        match status {
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Push::Retry(reason),
            s if s.is_server_error() => Push::Retry(reason),
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                Push::Fail(BusError::Codec {
                    subject: subject.into(),
                    reason,
                })
            }
            StatusCode::NOT_FOUND => Push::Fail(BusError::NoHandler {
                subject: subject.into(),
            }),
            _ => Push::Fail(unavailable(subject, reason)),
        }
    }
}

impl Transport for HttpTransport {
    fn placement(&self) -> &'static str {
        "http"
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

/// Turns the answer to a request into the reply or the error its status and body name.
async fn read_reply(
    response: reqwest::Response,
    subject: &str,
    deadline: Duration,
) -> Result<RemoteReply, BusError> {
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) if error.is_timeout() => return Err(timeout(subject, deadline)),
        Err(error) => {
            return Err(unavailable(
                subject,
                format!("reading the reply failed: {}", error_chain(&error)),
            ));
        }
    };
    if status.is_success() {
        return Ok(RemoteReply::Ok(Arc::from(&body[..])));
    }
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        #[derive(Deserialize)]
        struct Rejected {
            rejection: Rejection,
        }
        return match serde_json::from_slice::<Rejected>(&body) {
            Ok(Rejected { rejection }) => Ok(RemoteReply::Rejected(rejection)),
            Err(error) => Err(BusError::Codec {
                subject: subject.into(),
                reason: format!("a 422 without a rejection: {error}"),
            }),
        };
    }
    let wire = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { error }) => error,
        // Not one of ours (a proxy's page, say): the status is all there is to go by.
        Err(_) => WireError {
            kind: match status {
                StatusCode::NOT_FOUND => "no_handler",
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "codec",
                StatusCode::GATEWAY_TIMEOUT => "timeout",
                _ => "unavailable",
            }
            .to_owned(),
            reason: format!("answered {status}"),
            after_ms: None,
        },
    };
    if wire.kind == "unauthorized" {
        return Err(unavailable(
            subject,
            "the remote refused this process's credentials (check its identity)".into(),
        ));
    }
    Err(wire.into_error(subject, deadline))
}

/// An error answer's body: `{"error": {"kind", "reason"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: WireError,
}

fn error_reason(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| format!("{}: {}", b.error.kind, b.error.reason))
}
