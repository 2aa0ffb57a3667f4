//! The client side: requests on per-module subjects, events published to JetStream and acked.

use super::*;

/// The client side: sends requests to modules in other processes and publishes events to the
/// JetStream stream. Hand it to [`Bus::set_remote`] and [`Bus::forward_events_to`].
pub struct NatsTransport {
    client: Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    /// Whether the events stream is known to exist (checked before the first publish, and
    /// again after a publish found no stream).
    stream_ready: AtomicBool,
    /// One stream check at a time.
    stream_check: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("stream", &self.config.stream)
            .field("subject_prefix", &self.config.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    pub fn new(client: Client, config: NatsConfig) -> Self {
        Self {
            jetstream: jetstream::new(client.clone()),
            client,
            config,
            stream_ready: AtomicBool::new(false),
            stream_check: tokio::sync::Mutex::new(()),
        }
    }

    /// Creates or updates the events stream now, rather than before the first publish.
    pub async fn ensure_stream(&self) -> Result<(), NatsError> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one_at_a_time = self.stream_check.lock().await;
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        ensure_stream(&self.jetstream, &self.config).await?;
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn connected(&self, subject: &str) -> Result<(), BusError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(unavailable(subject, "not connected to NATS")),
        }
    }

    async fn send_request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> Result<RemoteReply, BusError> {
        let subject = envelope.subject.clone();
        self.connected(&subject)?;
        let mut map = envelope_headers(&envelope)?;
        map.insert(
            headers::DEADLINE_MS,
            u64::try_from(deadline.as_millis())
                .unwrap_or(u64::MAX)
                .to_string(),
        );
        let request = async_nats::Request::new()
            .payload(Bytes::from_owner(body))
            .headers(map)
            .timeout(Some(deadline));
        let reply = self
            .client
            .send_request(self.config.request_subject(&subject), request)
            .await
            .map_err(|error| match error.kind() {
                RequestErrorKind::NoResponders => unavailable(
                    &subject,
                    &format!(
                        "no process serves module `{}` (no responders)",
                        module_of(&subject)
                    ),
                ),
                RequestErrorKind::TimedOut if self.connected(&subject).is_ok() => {
                    BusError::Timeout {
                        subject: subject.clone(),
                        after: deadline,
                    }
                }
                RequestErrorKind::TimedOut => {
                    unavailable(&subject, "the connection to NATS was lost")
                }
                RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                    codec(&subject, &error.to_string())
                }
                RequestErrorKind::Other => unavailable(&subject, &error.to_string()),
            })?;
        decode_reply(&subject, deadline, &reply)
    }

    async fn publish_event(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        let subject = envelope.subject.clone();
        self.connected(&subject)?;
        self.ensure_stream()
            .await
            .map_err(|error| unavailable(&subject, &error.to_string()))?;
        let mut map = envelope_headers(&envelope)?;
        map.insert(headers::AGGREGATE_ID, aggregate.to_string());
        let publish = PublishMessage::build()
            .payload(Bytes::copy_from_slice(json.as_bytes()))
            .headers(map)
            .message_id(envelope.message_id.to_string());
        let failed = |error: &dyn std::fmt::Display| {
            unavailable(
                &subject,
                &format!("JetStream did not store the event: {error}"),
            )
        };
        let stored = async {
            self.jetstream
                .send_publish(self.config.event_subject(&subject), publish)
                .await?
                .await
        }
        .await;
        match stored {
            Ok(_ack) => Ok(()),
            Err(error) => {
                if error.kind() == PublishErrorKind::StreamNotFound {
                    // Someone deleted the stream: make it again before the next publish.
                    self.stream_ready.store(false, Ordering::Release);
                }
                Err(failed(&error))
            }
        }
    }
}

impl Transport for NatsTransport {
    fn placement(&self) -> &'static str {
        "nats"
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
        Box::pin(self.publish_event(envelope, json, aggregate))
    }
}
