//! The server side: what a process answers over NATS, and its lifecycle.

use super::*;

/// The running server side of one process; see [`serve`].
#[derive(Clone)]
pub struct ServeHandle {
    tasks: TaskTracker,
    stop: CancellationToken,
    server: Arc<Server>,
    /// The modules consuming events here, each through its durable consumer (named after it).
    consumers: Vec<&'static str>,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

/// A module's durable consumer as the NATS server sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerState {
    pub module: &'static str,
    /// Events in the stream the consumer has not been handed yet.
    pub pending: u64,
    /// Handed out and not acknowledged yet (being handled, or lost with a process).
    pub ack_pending: u64,
    /// Handed out more than once and not acknowledged yet.
    pub redelivered: u64,
}

impl ServeHandle {
    /// The consumer of each module consuming here, as the server reports it; one it cannot
    /// report now (NATS unreachable) is left out.
    pub async fn consumer_states(&self) -> Vec<ConsumerState> {
        let Ok(stream) = (self.server.jetstream)
            .get_stream(&self.server.config.stream)
            .await
        else {
            return Vec::new();
        };
        let mut states = Vec::new();
        for &module in &self.consumers {
            if let Ok(info) = stream.consumer_info(module).await {
                states.push(ConsumerState {
                    module,
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending as u64,
                    redelivered: info.num_redelivered as u64,
                });
            }
        }
        states
    }

    /// Stops taking messages from NATS (as cancelling the token given to [`serve`] does).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the server has stopped (its token was cancelled, or the bus began to shut
    /// down) and every message it took has been answered or acknowledged.
    pub async fn stopped(&self) {
        self.tasks.wait().await;
    }
}

/// Starts the server side for `bus`: answers the requests of every subject it handles and
/// consumes the events of every module that subscribes in it. Register every handler and
/// subscription before calling this.
///
/// Runs until `stop` is cancelled or the bus begins to shut down; see
/// [`ServeHandle::stopped`]. Only a bad configuration or a subscription the client refuses is
/// an error here: a stream or consumer that cannot be made yet (NATS is down) is retried in the
/// background.
pub async fn serve(
    bus: Bus,
    client: Client,
    config: NatsConfig,
    stop: CancellationToken,
) -> Result<ServeHandle, NatsError> {
    config
        .validate()
        .map_err(|(key, reason)| NatsError::Config { key, reason })?;
    let stop = stop.child_token();
    let tasks = TaskTracker::new();
    let server = Arc::new(Server {
        jetstream: jetstream::new(client.clone()),
        client: client.clone(),
        bus: bus.clone(),
        config,
        stop: stop.clone(),
        tasks: tasks.clone(),
    });
    let handled = bus.wiring().handled_subjects();
    for &subject in &handled {
        let subscriber = subscribe(&server, subject).await?;
        tasks.spawn(serve_requests(server.clone(), subject, subscriber));
    }
    if !handled.is_empty()
        && let Err(error) = client.flush().await
    {
        tracing::warn!(%error, "Could not flush the request subscriptions; NATS sends them on reconnect.");
    }
    let mut consumers = Vec::new();
    for group in bus.wiring().groups() {
        let subjects = bus.wiring().subscriptions_of(group);
        if subjects.is_empty() {
            continue;
        }
        consumers.push(group);
        tasks.spawn(events::consume_events(server.clone(), group, subjects));
    }
    tasks.close();
    tracing::info!(
        requests = handled.len(),
        stream = %server.config.stream,
        "NATS server side started."
    );
    Ok(ServeHandle {
        tasks,
        stop,
        server,
        consumers,
    })
}

async fn subscribe(server: &Server, subject: &'static str) -> Result<Subscriber, NatsError> {
    let wire = server.config.request_subject(subject);
    server
        .client
        .queue_subscribe(wire.clone(), module_of(subject).to_owned())
        .await
        .map_err(|error| NatsError::Subscribe {
            subject: wire,
            reason: error.to_string(),
        })
}

/// Takes the requests of one subject, each answered here or, once it waits, in a task of its
/// own (see [`answer_inline_or_spawn`]).
async fn serve_requests(server: Arc<Server>, subject: &'static str, mut subscriber: Subscriber) {
    let permits = Arc::new(Semaphore::new(server.config.max_in_flight));
    let mut failures = 0;
    loop {
        let next = tokio::select! {
            biased;
            () = server.stopping() => break,
            next = subscriber.next() => next,
        };
        let Some(message) = next else {
            // The subscription ended (the client was closed): subscribe again, with backoff.
            failures += 1;
            tracing::warn!(subject, "Request subscription ended; subscribing again.");
            if !server.pause(backoff(failures, RETRY_BASE, RETRY_MAX)).await {
                return;
            }
            match subscribe(&server, subject).await {
                Ok(again) => subscriber = again,
                Err(error) => tracing::warn!(%error, "Could not subscribe again; retrying."),
            }
            continue;
        };
        failures = 0;
        let received = Instant::now();
        let permit = tokio::select! {
            biased;
            () = server.stopping() => {
                server.tasks.spawn(answer(server.clone(), subject, message, received, None));
                break;
            }
            permit = permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            break;
        };
        answer_inline_or_spawn(
            &server,
            answer(server.clone(), subject, message, received, Some(permit)),
        );
    }
    // Stop taking requests (another instance gets them), then answer what was already here
    // rather than letting those callers wait for their deadline.
    if let Err(error) = subscriber.unsubscribe().await {
        tracing::debug!(%error, subject, "Could not unsubscribe.");
    }
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(100), subscriber.next()).await
    {
        server.tasks.spawn(answer(
            server.clone(),
            subject,
            message,
            Instant::now(),
            None,
        ));
    }
}

/// Runs `answering` here as far as it goes without waiting, and in a task of its own only if
/// it must wait. Most handlers answer from memory or a quick query, and their reply is queued
/// on the connection at once: spawning each of those cost a wake-up of another worker thread
/// and a context switch per request (perf: most of the NATS adapter's gap to a bare
/// responder at 16 callers). A handler that waits (I/O, a lock, a slow query) moves to a task
/// at its first wait, so requests are still answered concurrently.
fn answer_inline_or_spawn(server: &Server, answering: impl Future<Output = ()> + Send + 'static) {
    let mut answering = Box::pin(answering);
    // Polled once with a waker that does nothing: if it is not done, the spawned task polls
    // it again at once, registering its real waker wherever it waits.
    let mut here = std::task::Context::from_waker(std::task::Waker::noop());
    // A panic here would end the subject's subscription, where a spawned task's ends only
    // itself: it is caught and logged instead (handlers' own panics are caught earlier).
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        answering.as_mut().poll(&mut here)
    }));
    match polled {
        Ok(std::task::Poll::Pending) => {
            server.tasks.spawn(answering);
        }
        Ok(std::task::Poll::Ready(())) => {}
        Err(_) => tracing::error!("Answering a NATS request panicked; the request is dropped."),
    }
}

/// Answers one request.
async fn answer(
    server: Arc<Server>,
    subject: &'static str,
    message: async_nats::Message,
    received: Instant,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let Some(reply) = message.reply.clone() else {
        tracing::warn!(
            subject,
            "Bad request on the wire: no reply subject; ignoring it."
        );
        return;
    };
    let map = message.headers.as_ref();
    let outcome = match decode_envelope(map, subject) {
        Ok(envelope) => {
            let deadline = header(map, headers::DEADLINE_MS)
                .and_then(|raw| raw.parse::<u64>().ok())
                .map_or_else(
                    || server.bus.config().request_timeout(),
                    Duration::from_millis,
                )
                .saturating_sub(received.elapsed());
            let correlation_id = envelope.correlation_id.clone();
            let outcome = if deadline.is_zero() {
                Err(BusError::Timeout {
                    subject: subject.to_owned(),
                    after: received.elapsed(),
                })
            } else {
                server
                    .bus
                    .inbound("nats")
                    .serve_remote_request(envelope, &message.payload, deadline)
                    .await
            };
            if let Err(BusError::Codec { reason, .. }) = &outcome {
                tracing::warn!(subject, %correlation_id, %reason, "Bad request on the wire: its body does not decode.");
            }
            outcome
        }
        Err(reason) => {
            tracing::warn!(subject, %reason, "Bad request on the wire; answering with a codec error.");
            Err(codec(subject, &reason))
        }
    };
    let (map, body) = encode_outcome(subject, &outcome);
    if let Err(error) = server.client.publish_with_headers(reply, map, body).await {
        tracing::warn!(subject, %error, "Could not send a reply.");
    }
}
