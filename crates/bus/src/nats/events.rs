//! Events: one durable pull consumer per subscribing module, acked only once handled or dead-lettered.

use super::*;

/// Consumes module `group`'s events, opening the consumer's message stream again after any
/// error, until the server stops.
pub(super) async fn consume_events(
    server: Arc<Server>,
    group: &'static str,
    subjects: Vec<&'static str>,
) {
    let permits = Arc::new(Semaphore::new(server.config.max_in_flight));
    let mut chains = Chains::default();
    let mut failures = 0;
    'open: while !server.is_stopping() {
        let opened = tokio::select! {
            () = server.stopping() => break,
            opened = open_consumer(&server, group, &subjects) => opened,
        };
        let mut messages = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                failures += 1;
                tracing::warn!(module = group, %reason, "Cannot consume events yet; retrying.");
                if !server.pause(backoff(failures, RETRY_BASE, RETRY_MAX)).await {
                    break;
                }
                continue;
            }
        };
        let events = Arc::new(Events {
            server: server.clone(),
            group,
            subjects: subjects.clone(),
        });
        loop {
            // Take a message only when there is room to handle it.
            let permit = tokio::select! {
                biased;
                () = server.stopping() => break 'open,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break 'open };
            let next = tokio::select! {
                biased;
                () = server.stopping() => break 'open,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    failures = 0;
                    let key = event_key(&message);
                    let (after, done) = chains.next(key, server.config.max_in_flight);
                    server
                        .tasks
                        .spawn(events.clone().handle(message, after, done, permit));
                }
                Some(Err(error)) => {
                    failures += 1;
                    tracing::warn!(module = group, %error, "Event stream failed; opening it again.");
                    break;
                }
                None => {
                    failures += 1;
                    tracing::warn!(module = group, "Event stream ended; opening it again.");
                    break;
                }
            }
        }
        if !server.pause(backoff(failures, RETRY_BASE, RETRY_MAX)).await {
            break;
        }
    }
}

/// Makes sure the stream and the module's durable consumer exist, and opens its message
/// stream. Also says whether the server filters the consumer to the module's subjects.
async fn open_consumer(
    server: &Server,
    group: &'static str,
    subjects: &[&'static str],
) -> Result<pull::Stream, String> {
    // Several filters on one consumer came with NATS 2.10; an older server ignores them and
    // would hand every module every event.
    let version = server.client.server_info().version;
    if !supports_several_filters(&version) {
        return Err(format!(
            "the NATS server is {version}; Banyan needs 2.10 or newer (multi-subject consumer filters)"
        ));
    }
    let stream = ensure_stream(&server.jetstream, &server.config)
        .await
        .map_err(|e| e.to_string())?;
    let mut filters = consumer_filters(&server.config, subjects);
    let (filter_subject, filter_subjects) = if filters.len() == 1 {
        (filters.remove(0), Vec::new())
    } else {
        (String::new(), filters)
    };
    let wanted = pull::Config {
        durable_name: Some(group.to_owned()),
        description: Some(format!("Banyan module {group}")),
        ack_policy: AckPolicy::Explicit,
        ack_wait: server.config.ack_wait(),
        max_deliver: server.config.max_deliver,
        filter_subject,
        filter_subjects,
        ..pull::Config::default()
    };
    let consumer: PullConsumer = match stream.create_consumer(wanted).await {
        Ok(consumer) => consumer,
        Err(error) => match stream.get_consumer::<pull::Config>(group).await {
            // A server that cannot update the consumer in place: use it as it is.
            Ok(consumer) => {
                tracing::warn!(module = group, %error, "Could not update the module's consumer; using it as it is.");
                consumer
            }
            Err(_) => return Err(format!("cannot create the consumer `{group}`: {error}")),
        },
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(server.config.max_in_flight.min(256))
        .heartbeat(CONSUMER_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(|e| format!("cannot pull from the consumer `{group}`: {e}"))?;
    tracing::info!(module = group, "Consuming events.");
    Ok(messages)
}

/// What a module's consumer takes from the stream: every version of each event it subscribes
/// to (`<prefix>.evt.orders.order_placed.*`), so that a version none of its handlers knows
/// reaches it and is dead-lettered there, where an operator sees it, instead of waiting in the
/// stream unread.
pub(super) fn consumer_filters(config: &NatsConfig, subjects: &[&'static str]) -> Vec<String> {
    let mut filters: Vec<String> = subjects
        .iter()
        .map(|subject| {
            let stem = subject.rsplit_once('.').map_or(*subject, |(stem, _)| stem);
            config.event_subject(&format!("{stem}.*"))
        })
        .collect();
    filters.sort();
    filters.dedup();
    filters
}

/// Whether a server of `version` (`2.9.10`, `2.15.1-beta`) honours several subject filters on
/// one consumer.
pub(super) fn supports_several_filters(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// The aggregate an event is about (its header), else the message id: events of one key are
/// handled one after the other, in stream order.
fn event_key(message: &jetstream::Message) -> Uuid {
    let map = message.headers.as_ref();
    header(map, headers::AGGREGATE_ID)
        .or_else(|| header(map, headers::MESSAGE_ID))
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .unwrap_or_else(Uuid::nil)
}

/// Keeps the events of one aggregate in order while events of different aggregates are
/// handled concurrently: each event waits until the previous one of its aggregate is done.
#[derive(Default)]
struct Chains {
    /// The last event taken for each aggregate: it is done when its sender is dropped.
    tails: HashMap<Uuid, oneshot::Receiver<()>>,
}

impl Chains {
    fn next(
        &mut self,
        key: Uuid,
        bound: usize,
    ) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        if self.tails.len() > bound.saturating_mul(2) {
            // Forget the aggregates whose last event is done.
            self.tails.retain(|_, tail| {
                matches!(tail.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
        }
        let (done, tail) = oneshot::channel();
        (self.tails.insert(key, tail), done)
    }
}

/// Where an event that arrived goes in this instance.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// A subject the module subscribes to.
    Deliver,
    /// A version of a subscribed message that no local handler knows, such as `.v9`.
    UnknownVersion,
    /// Something else entirely.
    Unknown,
}

pub(super) fn route(subscribed: &[&str], subject: &str) -> Route {
    fn stem(subject: &str) -> &str {
        subject.rsplit_once('.').map_or(subject, |(stem, _)| stem)
    }
    if subscribed.contains(&subject) {
        Route::Deliver
    } else if subscribed.iter().any(|known| stem(known) == stem(subject)) {
        Route::UnknownVersion
    } else {
        Route::Unknown
    }
}

/// One module's consumer, as its event tasks see it.
struct Events {
    server: Arc<Server>,
    group: &'static str,
    subjects: Vec<&'static str>,
}

/// What to tell JetStream about an event.
enum Verdict {
    /// Done with: handled (or dead-lettered by the bus's worker after its own retries).
    Ack,
    /// Failed this time: deliver it again after this pause (JetStream counts the delivery).
    Nak(Duration),
    /// Never deliver it again: it is in this module's dead letters (or could not be kept and
    /// was logged as dropped).
    Term,
}

impl Events {
    async fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        after: Option<oneshot::Receiver<()>>,
        done: oneshot::Sender<()>,
        _permit: OwnedSemaphorePermit,
    ) {
        let work = async {
            if let Some(previous) = after {
                // Err only means the previous event's task ended: either way it is done.
                let _ = previous.await;
            }
            self.decide(&message).await
        };
        let verdict = keep_alive(work, &message, self.server.config.ack_wait() / 2).await;
        drop(done);
        let kind = match verdict {
            Verdict::Ack => AckKind::Ack,
            Verdict::Nak(delay) => AckKind::Nak(Some(delay)),
            Verdict::Term => AckKind::Term,
        };
        if let Err(error) = message.ack_with(kind).await {
            // JetStream delivers it again after the ack wait; the inbox absorbs the repeat.
            tracing::warn!(module = self.group, subject = %message.subject, %error, "Could not acknowledge an event.");
        }
    }

    /// What to do with one event of this module's consumer. The invariant: an event leaves
    /// the stream for this module (Ack or Term) only once it was handled or is in the module's
    /// dead letters, so no event is lost to a crash; everything else is a Nak, and the
    /// consumer's `max_deliver` bounds the retries. Three kinds of outcome:
    ///
    /// 1. **Not ours to deliver** (a subject outside the prefix, a version no handler knows, a
    ///    subject the module does not subscribe to on a filtering server, headers or a body
    ///    that do not decode): poison. Retrying would fail the same way forever, so it goes
    ///    straight to dead letters and is terminated ([`reject`](Self::reject)).
    /// 2. **Delivered**: handed to the bus, which runs the module's handler on the aggregate's
    ///    worker (order kept across this instance's concurrent events by the `Chains` above)
    ///    and dead-letters what fails all of the bus's own attempts. `Ok` is then an Ack.
    /// 3. **Failed anyway** (the bus is shutting down, its queue is closed): Nak with growing
    ///    pauses, and on JetStream's last delivery the event is dead-lettered here instead, so
    ///    it is never silently dropped by `max_deliver`.
    async fn decide(&self, message: &jetstream::Message) -> Verdict {
        let server = &self.server;
        let wire_subject = message.subject.as_str();
        let delivered = message.info().map_or(1, |info| info.delivered);
        let last = delivered >= server.config.max_deliver;
        let Some(subject) = wire_subject.strip_prefix(&server.config.event_prefix()) else {
            return self
                .reject(
                    message,
                    wire_subject,
                    "the subject is outside the events prefix".into(),
                    last,
                )
                .await;
        };
        match route(&self.subjects, subject) {
            Route::Deliver => {}
            Route::UnknownVersion => {
                let reason = format!("no handler of module `{}` knows this version", self.group);
                return self.reject(message, subject, reason, last).await;
            }
            Route::Unknown => {
                // The consumer's filters let only this module's events through: one that is
                // not is kept where an operator sees it, not dropped.
                let reason = format!("module `{}` does not subscribe to this subject", self.group);
                return self.reject(message, subject, reason, last).await;
            }
        }
        // The aggregate header orders the event among its aggregate's; without one the message
        // id stands in (the event is then ordered with nothing, which is still correct).
        let map = message.headers.as_ref();
        let parsed = decode_envelope(map, subject).and_then(|envelope| {
            let aggregate = match header(map, headers::AGGREGATE_ID) {
                Some(raw) => Uuid::parse_str(raw).map_err(|_| {
                    format!("header {} is not a UUID: {raw:?}", headers::AGGREGATE_ID)
                })?,
                None => envelope.message_id,
            };
            let json: Arc<str> = std::str::from_utf8(&message.payload)
                .map_err(|_| "the body is not UTF-8".to_owned())?
                .into();
            Ok((envelope, json, aggregate))
        });
        let (envelope, json, aggregate) = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => return self.reject(message, subject, reason, last).await,
        };
        let dead_letter_envelope = last.then(|| envelope.clone());
        // Returns once the module's handler succeeded or the bus dead-lettered the event
        // (including a body that does not decode): both mean the event is done with.
        match server
            .bus
            .inbound("nats")
            .deliver_remote_event_to(self.group, envelope, json.clone(), aggregate)
            .await
        {
            Ok(()) => Verdict::Ack,
            Err(error) => match dead_letter_envelope {
                Some(envelope) => {
                    tracing::error!(module = self.group, subject, delivered, %error, "Event failed its last delivery; dead-lettering it.");
                    let reason = format!(
                        "delivery {delivered} of {} failed: {error}",
                        server.config.max_deliver
                    );
                    self.dead_letter(&envelope, &json, &reason, true).await
                }
                None => {
                    tracing::warn!(module = self.group, subject, delivered, %error, "Event delivery failed; JetStream delivers it again.");
                    Verdict::Nak(backoff(
                        u32::try_from(delivered).unwrap_or(u32::MAX),
                        NAK_BASE,
                        NAK_MAX,
                    ))
                }
            },
        }
    }

    /// A message that cannot be delivered at all: logged, dead-lettered, terminated.
    async fn reject(
        &self,
        message: &jetstream::Message,
        subject: &str,
        reason: String,
        last: bool,
    ) -> Verdict {
        tracing::warn!(
            module = self.group,
            subject = %message.subject,
            %reason,
            "Bad message on the wire; dead-lettering it."
        );
        let envelope = best_effort_envelope(message.headers.as_ref(), subject);
        let payload = String::from_utf8_lossy(&message.payload);
        self.dead_letter(&envelope, &payload, &format!("bad message: {reason}"), last)
            .await
    }

    async fn dead_letter(
        &self,
        envelope: &Envelope,
        payload: &str,
        reason: &str,
        last: bool,
    ) -> Verdict {
        match self
            .server
            .bus
            .inbound("nats")
            .dead_letter_received(self.group, envelope, payload, reason)
            .await
        {
            Ok(true) => Verdict::Term,
            Ok(false) => {
                tracing::error!(module = self.group, subject = %envelope.subject, "No dead-letter store for this module; the message is dropped.");
                Verdict::Term
            }
            Err(error) if last => {
                tracing::error!(module = self.group, subject = %envelope.subject, %error, "Could not store a dead letter after the last delivery; the message is dropped.");
                Verdict::Term
            }
            Err(error) => {
                tracing::warn!(module = self.group, subject = %envelope.subject, %error, "Could not store a dead letter; JetStream delivers the message again.");
                Verdict::Nak(NAK_BASE)
            }
        }
    }
}

/// Runs `work`, telling JetStream every `every` that the message is still being worked on, so
/// that a slow handler (retrying with backoff) is not raced by a redelivery.
async fn keep_alive<T>(
    work: impl Future<Output = T>,
    message: &jetstream::Message,
    every: Duration,
) -> T {
    let every = every.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = tick.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(%error, "Could not extend an event's ack wait.");
                }
            }
        }
    }
}
