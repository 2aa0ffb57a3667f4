//! The NATS adapter against a real NATS server with JetStream: requests over queue groups,
//! events over a durable consumer per module, and bad messages on the wire.
//!
//! NATS: `BANYAN_TEST_NATS_URL` (default: the local cluster, see `banyan_bus::testing`), with JetStream enabled. If
//! it cannot be reached the tests fail, unless `BANYAN_SKIP_NATS=1` is set (never honoured
//! when `CI` is). Each test uses a subject prefix and a stream of its own, deleted at the end,
//! so tests (and other users of the server) never see each other's messages.

mod support;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::{HeaderMap, jetstream};
use banyan_bus::{
    Bus, BusConfig, BusError, Context, CorrelationId, Event, MESSAGING_MIGRATIONS, Message, Outbox,
    Rejection, Request, Transport, dead_letter,
    nats::{self, NatsConfig, NatsTransport, ServeHandle, headers},
    testing::{PrivateNats, TestStream},
};
use banyan_db::{DatabaseConfig, Db};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{PATIENCE, wait_until, wait_until_within};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A guard against hangs only: the calls it bounds are expected to return in milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------ messages

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echo {
    text: String,
    refuse: bool,
}

impl Message for Echo {
    const SUBJECT: &str = "test.echo.v1";
}

impl Request for Echo {
    type Response = Echoed;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Echoed {
    text: String,
    instance: String,
    correlation_id: String,
    causation_id: Option<Uuid>,
}

/// A request to a module that no process hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping;

impl Message for Ping {
    const SUBJECT: &str = "absent.ping.v1";
}

impl Request for Ping {
    type Response = ();
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Thing {
    aggregate: Uuid,
    seq: u32,
}

impl Message for Thing {
    const SUBJECT: &str = "test.thing.v1";
}

impl Event for Thing {
    fn aggregate_id(&self) -> Uuid {
        self.aggregate
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Other {
    id: Uuid,
}

impl Message for Other {
    const SUBJECT: &str = "test.other.v1";
}

impl Event for Other {
    fn aggregate_id(&self) -> Uuid {
        self.id
    }
}

// ------------------------------------------------------------------------------ harness

/// A test's corner of the NATS server (its own subject prefix and stream, deleted on drop),
/// and the buses and transports of the "processes" the test plays.
struct TestNats {
    url: String,
    config: NatsConfig,
    _stream: TestStream,
}

impl TestNats {
    /// `None` when NATS cannot be reached and the caller allowed skipping.
    async fn start() -> Option<Self> {
        TestStream::start().await.map(Self::from)
    }

    /// A fresh prefix and stream on the server at `url`.
    fn on(url: String) -> Self {
        Self::from(TestStream::on(url))
    }

    /// A client of its own, as a separate process would have.
    async fn client(&self) -> async_nats::Client {
        nats::connect(&self.url).await.expect("connecting to NATS")
    }

    async fn transport(&self) -> Arc<NatsTransport> {
        Arc::new(NatsTransport::new(self.client().await, self.config.clone()))
    }

    /// Starts the server side for `bus`, with a connection of its own.
    async fn serve(&self, bus: &Bus) -> Instance {
        let stop = CancellationToken::new();
        let handle = nats::serve(
            bus.clone(),
            self.client().await,
            self.config.clone(),
            stop.clone(),
        )
        .await
        .expect("starting the NATS server side");
        Instance {
            bus: bus.clone(),
            stop,
            handle,
        }
    }
}

impl From<TestStream> for TestNats {
    fn from(stream: TestStream) -> Self {
        Self {
            url: stream.config.url.clone(),
            config: stream.config.clone(),
            _stream: stream,
        }
    }
}

/// One process's bus with its NATS server side.
struct Instance {
    bus: Bus,
    stop: CancellationToken,
    handle: ServeHandle,
}

impl Instance {
    async fn stop(self) {
        self.stop.cancel();
        self.bus.shutdown().await;
        tokio::time::timeout(PATIENCE, self.handle.stopped())
            .await
            .expect("the NATS server side did not stop");
    }
}

/// Registers `Echo` in module `test`; the handler names `instance` and counts its calls.
fn serve_echo(bus: &Bus, instance: &'static str) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    bus.handle::<Echo, _, _>("test", move |cx, echo| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if echo.refuse {
                return Err(
                    Rejection::new("refused", format!("will not echo {}", echo.text))
                        .with_details(json!({ "text": echo.text, "instance": instance })),
                );
            }
            Ok(Echoed {
                text: echo.text,
                instance: instance.to_owned(),
                correlation_id: cx.correlation_id().to_string(),
                causation_id: cx.causation_id(),
            })
        }
    });
    calls
}

fn echo(text: &str) -> Echo {
    Echo {
        text: text.to_owned(),
        refuse: false,
    }
}

/// What one instance of a module saw: (message id, aggregate, sequence number), in order.
type Log = Arc<Mutex<Vec<(Uuid, Uuid, u32)>>>;

fn subscribe_logging(bus: &Bus, group: &'static str) -> Log {
    let log: Log = Arc::default();
    let sink = log.clone();
    bus.subscribe::<Thing, _, _>(group, move |delivered| {
        let sink = sink.clone();
        async move {
            sink.lock().expect("log lock").push((
                delivered.message_id(),
                delivered.aggregate,
                delivered.seq,
            ));
            Ok(())
        }
    });
    log
}

fn snapshot(log: &Log) -> Vec<(Uuid, Uuid, u32)> {
    log.lock().expect("log lock").clone()
}

fn distinct(entries: &[(Uuid, Uuid, u32)]) -> HashSet<Uuid> {
    entries.iter().map(|(id, _, _)| *id).collect()
}

/// A module database on SQLite in `dir`, with the bus's tables.
async fn open_db(module: &'static str, dir: &TempDir) -> Db {
    let config = DatabaseConfig {
        url: format!("sqlite://{}", dir.path().display()),
        ..DatabaseConfig::default()
    };
    Db::open(module, &config, &[&*MESSAGING_MIGRATIONS])
        .await
        .expect("opening a module database")
}

async fn letters(db: &Db) -> Vec<dead_letter::DeadLetter> {
    dead_letter::list(db, Some("dead"), 100)
        .await
        .expect("listing dead letters")
}

/// Headers of a well-formed event, as the transport would send them.
fn event_headers(subject: &str, aggregate: Uuid) -> HeaderMap {
    let envelope = Context::root().envelope(subject);
    let mut map = nats::envelope_headers(&envelope).expect("encoding an envelope");
    map.insert(headers::AGGREGATE_ID, aggregate.to_string());
    map
}

// ------------------------------------------------------------------------------ requests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_over_nats_gets_its_answer_and_a_rejection_intact() {
    let Some(env) = TestNats::start().await else {
        return;
    };
    let server = Bus::new(BusConfig::default());
    serve_echo(&server, "one");
    let server = env.serve(&server).await;

    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote("test", env.transport().await);
    let cx = Context::new(
        CorrelationId::parse("req-over-nats").expect("a valid id"),
        None,
    );

    let answer = tokio::time::timeout(HANG_GUARD, client.request(&cx, echo("hello")))
        .await
        .expect("the request hung")
        .expect("the request failed");
    assert_eq!(answer.text, "hello");
    assert_eq!(answer.instance, "one");
    assert_eq!(
        answer.correlation_id, "req-over-nats",
        "the correlation id crossed the wire"
    );
    assert!(
        answer.causation_id.is_some(),
        "the handler's context names the request as its cause"
    );

    let refused = Echo {
        text: "rude".into(),
        refuse: true,
    };
    let outcome = tokio::time::timeout(HANG_GUARD, client.request(&cx, refused))
        .await
        .expect("the request hung");
    let expected = Rejection::new("refused", "will not echo rude")
        .with_details(json!({ "text": "rude", "instance": "one" }));
    assert_eq!(outcome, Err(BusError::Rejected(expected)));

    server.stop().await;
}

/// Requests whose handlers answer at once are answered on the subscription's own task; one
/// whose handler waits moves to a task of its own at its first wait, so the next request is
/// still served meanwhile. Here the first request's handler waits until a second request has
/// reached its handler: served one after the other, it would never answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_waits_does_not_hold_up_the_requests_after_it() {
    let Some(env) = TestNats::start().await else {
        return;
    };
    let server = Bus::new(BusConfig::default());
    let second_arrived = Arc::new(tokio::sync::Notify::new());
    let arrived = second_arrived.clone();
    server.handle::<Echo, _, _>("test", move |_, echo| {
        let arrived = arrived.clone();
        async move {
            if echo.text == "first" {
                arrived.notified().await;
            } else {
                arrived.notify_one();
            }
            Ok(Echoed {
                text: echo.text,
                instance: "one".into(),
                correlation_id: String::new(),
                causation_id: None,
            })
        }
    });
    let server = env.serve(&server).await;
    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote("test", env.transport().await);
    let cx = Context::root();

    let first = tokio::spawn({
        let (client, cx) = (client.clone(), cx.clone());
        async move { client.request(&cx, echo("first")).await }
    });
    // Some time for the first to reach its handler and wait there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::time::timeout(HANG_GUARD, client.request(&cx, echo("second")))
        .await
        .expect("the second request waited behind the first");
    assert_eq!(second.expect("the second request failed").text, "second");
    let first = tokio::time::timeout(HANG_GUARD, first)
        .await
        .expect("the first request hung")
        .expect("the first caller panicked");
    assert_eq!(first.expect("the first request failed").text, "first");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_to_a_module_with_no_process_behind_it_fails_with_unavailable_at_once() {
    let Some(env) = TestNats::start().await else {
        return;
    };
    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote("absent", env.transport().await);

    // A deadline of an hour: only "no responders" can make this return within the guard.
    let cx = Context::root();
    let call = client.request_within(&cx, Ping, Duration::from_secs(3_600));
    let outcome = tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("a request nobody serves waited for its deadline");
    match outcome {
        Err(BusError::Unavailable { subject, reason }) => {
            assert_eq!(subject, Ping::SUBJECT);
            assert!(reason.contains("no responders"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_server_instances_of_one_module_share_the_requests() {
    let Some(env) = TestNats::start().await else {
        return;
    };
    let (first, second) = (
        Bus::new(BusConfig::default()),
        Bus::new(BusConfig::default()),
    );
    let calls_first = serve_echo(&first, "first");
    let calls_second = serve_echo(&second, "second");
    let (first, second) = (env.serve(&first).await, env.serve(&second).await);

    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote("test", env.transport().await);
    let cx = Context::root();
    let calls = (0..50).map(|i| client.request(&cx, echo(&format!("n{i}"))));
    let answers = tokio::time::timeout(PATIENCE, futures::future::join_all(calls))
        .await
        .expect("the requests hung");

    let mut by_instance: HashMap<String, usize> = HashMap::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.expect("a request failed");
        assert_eq!(answer.text, format!("n{i}"));
        *by_instance.entry(answer.instance).or_default() += 1;
    }
    let (handled_first, handled_second) = (
        calls_first.load(Ordering::SeqCst),
        calls_second.load(Ordering::SeqCst),
    );
    assert_eq!(
        handled_first + handled_second,
        50,
        "each request was handled once"
    );
    assert!(
        handled_first > 0 && handled_second > 0,
        "the queue group shares requests: {by_instance:?}"
    );
    assert_eq!(
        by_instance.get("first").copied().unwrap_or(0),
        handled_first
    );

    first.stop().await;
    second.stop().await;
}

// ------------------------------------------------------------------------------ events

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_published_through_the_transport_reaches_each_subscribing_module_once_even_with_two_instances_of_a_module()
 {
    let Some(env) = TestNats::start().await else {
        return;
    };
    // Module `a` in one process, module `b` in two.
    let a = Bus::new(BusConfig::default());
    let log_a = subscribe_logging(&a, "a");
    let (b1, b2) = (
        Bus::new(BusConfig::default()),
        Bus::new(BusConfig::default()),
    );
    let (log_b1, log_b2) = (subscribe_logging(&b1, "b"), subscribe_logging(&b2, "b"));
    let a = env.serve(&a).await;
    let (b1, b2) = (env.serve(&b1).await, env.serve(&b2).await);

    // 100 events over 10 aggregates, each aggregate's numbered in order.
    let transport = env.transport().await;
    let aggregates: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    let mut first = None;
    for seq in 0..100u32 {
        let thing = Thing {
            aggregate: aggregates[(seq % 10) as usize],
            seq,
        };
        let envelope = Context::root().envelope(Thing::SUBJECT);
        let json: Arc<str> = serde_json::to_string(&thing).expect("encoding").into();
        transport
            .publish(envelope.clone(), json.clone(), thing.aggregate)
            .await
            .expect("JetStream stored the event");
        first.get_or_insert((envelope, json, thing.aggregate));
    }
    // The outbox relay sends an event again: same message id, dropped by JetStream.
    let (envelope, json, aggregate) = first.expect("one event was published");
    transport
        .publish(envelope, json, aggregate)
        .await
        .expect("JetStream acknowledged the duplicate");

    wait_until("module a got 100 events", async || {
        snapshot(&log_a).len() >= 100
    })
    .await;
    wait_until("module b's instances got 100 events together", async || {
        snapshot(&log_b1).len() + snapshot(&log_b2).len() >= 100
    })
    .await;

    let stream = jetstream::new(env.client().await)
        .get_stream(&env.config.stream)
        .await
        .expect("the events stream exists")
        .get_info()
        .await
        .expect("stream info");
    assert_eq!(stream.state.messages, 100, "the duplicate was not stored");

    let seen_a = snapshot(&log_a);
    assert_eq!(seen_a.len(), 100);
    assert_eq!(distinct(&seen_a).len(), 100, "module a got each event once");
    let (seen_b1, seen_b2) = (snapshot(&log_b1), snapshot(&log_b2));
    let mut seen_b = seen_b1.clone();
    seen_b.extend(seen_b2.iter().copied());
    assert_eq!(
        seen_b.len(),
        100,
        "module b got each event once, whichever instance ({} + {})",
        seen_b1.len(),
        seen_b2.len()
    );
    assert_eq!(distinct(&seen_b), distinct(&seen_a));

    // One instance of a module handles each aggregate's events in their order.
    for aggregate in &aggregates {
        let seqs: Vec<u32> = seen_a
            .iter()
            .filter(|(_, agg, _)| agg == aggregate)
            .map(|(_, _, seq)| *seq)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "aggregate {aggregate} out of order: {seqs:?}"
        );
    }

    // One durable consumer per module, named after it, filtered to every version of the one
    // event it follows.
    let consumer = jetstream::new(env.client().await)
        .get_stream(&env.config.stream)
        .await
        .expect("the events stream")
        .consumer_info("b")
        .await
        .expect("module b's consumer");
    assert_eq!(
        consumer.config.filter_subject,
        env.config.event_subject("test.thing.*")
    );
    assert_eq!(consumer.config.max_deliver, env.config.max_deliver);

    a.stop().await;
    b1.stop().await;
    b2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_message_on_the_wire_is_logged_dead_lettered_and_the_server_keeps_working() {
    let Some(env) = TestNats::start().await else {
        return;
    };
    let dir = TempDir::new().expect("a temporary data directory");
    let bus = Bus::new(BusConfig::default());
    let good = Arc::new(AtomicUsize::new(0));
    let counter = good.clone();
    bus.subscribe::<Thing, _, _>("a", move |_| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    // A second subscription, so the consumer filters on several subjects.
    bus.subscribe::<Other, _, _>("a", |_| async { Ok(()) });
    serve_echo(&bus, "one");
    let outbox = Outbox::start(&bus, open_db("a", &dir).await);
    let db = outbox.db().clone();
    let server = env.serve(&bus).await;

    let client = env.client().await;
    let transport = env.transport().await;
    transport.ensure_stream().await.expect("the events stream");
    let jetstream = jetstream::new(client.clone());
    let thing_subject = env.config.event_subject(Thing::SUBJECT);
    // Right after the stream is made, a cluster node may not know yet that its subjects have
    // a stream behind them, and answers a publish with "no responders" (`StreamNotFound`):
    // the relay resends in that case, and so does this.
    let publish = async |subject: String, map: Option<HeaderMap>, body: &'static [u8]| {
        for attempt in 1.. {
            let ack = match map.clone() {
                Some(map) => {
                    jetstream
                        .publish_with_headers(subject.clone(), map, body.into())
                        .await
                }
                None => jetstream.publish(subject.clone(), body.into()).await,
            };
            match ack.expect("publishing").await {
                Ok(_) => return,
                Err(error)
                    if attempt < 50
                        && error.kind() == jetstream::context::PublishErrorKind::StreamNotFound =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("JetStream did not store it: {error}"),
            }
        }
    };

    // No headers at all, and a body that is not JSON.
    publish(thing_subject.clone(), None, b"{\"garbage").await;
    // Well-formed headers, a body that does not decode as the event.
    publish(
        thing_subject.clone(),
        Some(event_headers(Thing::SUBJECT, Uuid::now_v7())),
        b"{\"unexpected\": true}",
    )
    .await;
    // A message id that is not a UUID.
    let mut bad_id = event_headers(Thing::SUBJECT, Uuid::now_v7());
    bad_id.insert(headers::MESSAGE_ID, "not-a-uuid");
    publish(thing_subject.clone(), Some(bad_id), b"{}").await;
    // A version no handler here knows: the consumer takes every version of the events it
    // follows, so it reaches the module and is dead-lettered there.
    let v9 = "test.thing.v9";
    publish(
        env.config.event_subject(v9),
        Some(event_headers(v9, Uuid::now_v7())),
        b"{}",
    )
    .await;

    // Then a good event.
    let thing = Thing {
        aggregate: Uuid::now_v7(),
        seq: 1,
    };
    transport
        .publish(
            Context::root().envelope(Thing::SUBJECT),
            serde_json::to_string(&thing).expect("encoding").into(),
            thing.aggregate,
        )
        .await
        .expect("JetStream stored the good event");
    wait_until("the good event was handled", async || {
        good.load(Ordering::SeqCst) == 1
    })
    .await;

    let consumer = jetstream
        .get_stream(&env.config.stream)
        .await
        .expect("the events stream")
        .consumer_info("a")
        .await
        .expect("module a's consumer");
    // Filtered to every version of the module's two events.
    assert_eq!(consumer.config.filter_subjects.len(), 2, "{consumer:?}");
    wait_until("the bad events were dead-lettered", async || {
        letters(&db).await.len() >= 4
    })
    .await;
    let dead = letters(&db).await;
    assert_eq!(dead.len(), 4, "{dead:#?}");
    let errors: Vec<&str> = dead.iter().map(|l| l.error.as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains(headers::SUBJECT) && e.contains("missing")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("undecodable")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains(headers::MESSAGE_ID)),
        "{errors:?}"
    );
    let unknown_version = dead.iter().find(|l| l.subject == v9);
    assert!(
        unknown_version.is_some_and(|l| l.error.contains("version")),
        "{dead:#?}"
    );
    assert!(dead.iter().all(|l| l.module == "a"));

    // A request with garbage headers gets a codec error, and so does one whose body does not
    // decode; the next good request is answered.
    let request_subject = env.config.request_subject(Echo::SUBJECT);
    let mut garbage = HeaderMap::new();
    garbage.insert(headers::SUBJECT, Echo::SUBJECT);
    garbage.insert(headers::MESSAGE_ID, "123");
    garbage.insert(headers::TIMESTAMP, "yesterday");
    let mut undecodable = nats::envelope_headers(&Context::root().envelope(Echo::SUBJECT))
        .expect("encoding an envelope");
    undecodable.insert(headers::DEADLINE_MS, "5000");
    for (map, body) in [(garbage, "{}"), (undecodable, "[1, 2")] {
        let request = async_nats::Request::new()
            .headers(map)
            .payload(body.into())
            .timeout(Some(HANG_GUARD));
        let reply = client
            .send_request(request_subject.clone(), request)
            .await
            .expect("a bad request is answered");
        let outcome = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::OUTCOME))
            .map(|v| v.as_str().to_owned());
        assert_eq!(outcome.as_deref(), Some("error"));
        let error: serde_json::Value =
            serde_json::from_slice(&reply.payload).expect("a JSON error body");
        assert_eq!(error["kind"], "codec", "{error}");
    }
    let caller = Bus::new(BusConfig::default());
    caller.wiring().set_remote("test", transport.clone());
    let answer = tokio::time::timeout(
        HANG_GUARD,
        caller.request(&Context::root(), echo("still here")),
    )
    .await
    .expect("the request hung")
    .expect("the server still answers");
    assert_eq!(answer.text, "still here");

    // And the consumer still takes events.
    let thing = Thing {
        aggregate: Uuid::now_v7(),
        seq: 2,
    };
    transport
        .publish(
            Context::root().envelope(Thing::SUBJECT),
            serde_json::to_string(&thing).expect("encoding").into(),
            thing.aggregate,
        )
        .await
        .expect("JetStream stored the event");
    wait_until("the next good event was handled", async || {
        good.load(Ordering::SeqCst) == 2
    })
    .await;

    server.stop().await;
}

// ------------------------------------------------------------------------------ failures

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_adapter_survives_the_nats_server_going_away_for_a_while() {
    let Some(mut private) = PrivateNats::start().await else {
        return;
    };
    let env = TestNats::on(private.url());
    let bus = Bus::new(BusConfig::default());
    serve_echo(&bus, "one");
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    bus.subscribe::<Thing, _, _>("a", move |_| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let server = env.serve(&bus).await;
    let transport = env.transport().await;
    let caller = Bus::new(BusConfig::default());
    caller.wiring().set_remote("test", transport.clone());
    let cx = Context::root();
    let event = |seq| {
        let thing = Thing {
            aggregate: Uuid::now_v7(),
            seq,
        };
        let json: Arc<str> = serde_json::to_string(&thing).expect("encoding").into();
        (
            Context::root().envelope(Thing::SUBJECT),
            json,
            thing.aggregate,
        )
    };

    let answer = tokio::time::timeout(HANG_GUARD, caller.request(&cx, echo("before")))
        .await
        .expect("the request hung");
    assert_eq!(answer.expect("answered").text, "before");
    let (envelope, json, aggregate) = event(1);
    transport
        .publish(envelope, json, aggregate)
        .await
        .expect("JetStream stored the event");
    wait_until("the first event was handled", async || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;

    // Reconnect backoffs make recovery take seconds, more on a loaded machine.
    const RECOVERY: Duration = Duration::from_secs(180);

    // NATS goes away: calls fail as Unavailable (the outbox keeps events to send later).
    private.kill().await;
    wait_until_within(RECOVERY, "a request fails as Unavailable", async || {
        let call = caller.request_within(&cx, echo("during"), Duration::from_secs(1));
        matches!(call.await, Err(BusError::Unavailable { .. }))
    })
    .await;
    let (envelope, json, aggregate) = event(2);
    let outcome = transport
        .publish(envelope.clone(), json.clone(), aggregate)
        .await;
    assert!(
        matches!(outcome, Err(BusError::Unavailable { .. })),
        "{outcome:?}"
    );

    // NATS comes back (same port, same JetStream store): everything resumes by itself.
    private.run().await.expect("restarting nats-server");
    wait_until_within(RECOVERY, "requests are answered again", async || {
        let call = caller.request_within(&cx, echo("after"), Duration::from_secs(2));
        call.await.is_ok()
    })
    .await;
    // The relay would send the same event again until it is stored: same message id.
    wait_until_within(RECOVERY, "the event is stored", async || {
        transport
            .publish(envelope.clone(), json.clone(), aggregate)
            .await
            .is_ok()
    })
    .await;
    wait_until_within(RECOVERY, "the consumer took the event", async || {
        handled.load(Ordering::SeqCst) == 2
    })
    .await;

    server.stop().await;
    drop(env);
    private.kill().await;
}
