//! The gRPC adapter over real sockets on 127.0.0.1, served on one port with the HTTP adapter:
//! requests and rejections, deadlines, the processes' credential, round robin over instances
//! with a dead one skipped, events pushed to a subscribing module (once, through its inbox),
//! poison events, and a publish that gives up on a module that is down.

mod support;

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use banyan_bus::{
    Bus, BusConfig, BusError, Context, CorrelationId, Message, Outbox, Rejection, Transport,
    dead_letter,
    grpc::{
        self, BusClient, GrpcTransport,
        messages::{CallRequest, EventPush},
    },
    http::{
        self, HttpTransportConfig, SharedSecret, StaticInstances, StaticSubscribers,
        envelope_headers,
    },
};
use banyan_db::Db;
use support::{
    TestStorage, applied,
    calc::{
        Add, Divide, OrderPlaced, Sum, a_publish_to_a_dead_instance_gives_up_after_its_retries,
        calc_server, requests_are_balanced_and_skip_a_dead_instance, shipping_bus,
    },
    rows, wait_until,
};
use tonic::{Code, metadata::MetadataMap, transport::Channel};
use uuid::Uuid;

const SECRET: &str = "test-shared-secret-0123456789";

/// Serves `bus` over gRPC *and* HTTP on one fresh port of 127.0.0.1, as the internal listener
/// does; returns the base URL.
async fn serve(bus: &Bus) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a port for the server");
    let address = listener.local_addr().expect("the server's address");
    let peers = SharedSecret::new(SECRET).expect("a secret");
    let app = grpc::routes(bus.clone(), peers.clone()).merge(http::routes(bus.clone(), peers));
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serving the bus");
    });
    format!("http://{address}")
}

fn transport(
    instances: Vec<(&str, Vec<String>)>,
    subscribers: Vec<(&str, Vec<&str>)>,
    secret: &str,
    config: HttpTransportConfig,
) -> Arc<GrpcTransport> {
    Arc::new(GrpcTransport::new(
        Arc::new(StaticInstances::new(instances)),
        Arc::new(StaticSubscribers::new(subscribers)),
        SharedSecret::new(secret).expect("a secret"),
        config,
    ))
}

/// A client bus that reaches module `calc` over gRPC at `instances`.
fn calc_client(instances: Vec<String>) -> Bus {
    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote(
        "calc",
        transport(
            vec![("calc", instances)],
            vec![],
            SECRET,
            HttpTransportConfig::default(),
        ),
    );
    client
}

/// Module `shipping` (see [`shipping_bus`]), served.
async fn shipping_server(storage: &TestStorage) -> (Bus, Db, String) {
    let (bus, db) = shipping_bus(storage).await;
    let base = serve(&bus).await;
    (bus, db, base)
}

/// A transport that sends `orders.placed.v1` to module `shipping` at `instances`.
fn events_to_shipping(instances: Vec<String>, config: HttpTransportConfig) -> Arc<GrpcTransport> {
    transport(
        vec![("shipping", instances)],
        vec![("orders.placed.v1", vec!["shipping"])],
        SECRET,
        config,
    )
}

/// A raw client of the service at `base`.
async fn raw_client(base: &str) -> BusClient<Channel> {
    BusClient::new(
        Channel::from_shared(base.to_owned())
            .expect("a URL")
            .connect()
            .await
            .expect("connecting"),
    )
}

/// The metadata of a call with `envelope`, and `authorization` if given.
fn metadata(subject: &str, authorization: Option<&str>) -> MetadataMap {
    let mut headers = envelope_headers(&Context::root().envelope(subject)).expect("headers");
    if let Some(authorization) = authorization {
        headers.insert("authorization", authorization.parse().expect("a header"));
    }
    MetadataMap::from_headers(headers)
}

/// A raw event push with a full envelope, as another process would send it.
async fn raw_event(
    base: &str,
    subject: &str,
    module: &str,
    body: &'static str,
) -> Result<String, tonic::Status> {
    let request = tonic::Request::from_parts(
        metadata(subject, Some(&format!("Bearer {SECRET}"))),
        Default::default(),
        EventPush {
            subject: subject.into(),
            module: module.into(),
            aggregate_id: Uuid::now_v7().to_string(),
            body: body.into(),
        },
    );
    raw_client(base)
        .await
        .push_event(request)
        .await
        .map(|ack| ack.into_inner().status)
}

// ------------------------------------------------------------------------------ requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_grpc_gets_its_answer_and_a_rejection_intact() {
    let (server, calls) = calc_server("one");
    let base = serve(&server).await;
    let client = calc_client(vec![base]);
    let cx = Context::new(CorrelationId::parse("req-grpc-1").unwrap(), None);

    let sum = client.request(&cx, Add { a: 2, b: 3 }).await.unwrap();
    assert_eq!(sum.sum, 5);
    assert_eq!(
        sum.correlation_id, "req-grpc-1",
        "the correlation id crossed"
    );

    let error = client.request(&cx, Add { a: -1, b: 3 }).await.unwrap_err();
    assert_eq!(
        error,
        BusError::Rejected(
            Rejection::new("negative", "operands must not be negative")
                .with_details(serde_json::json!({ "a": -1, "b": 3 }))
        )
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let error = client
        .request(&cx, Divide { a: 1, b: 0 })
        .await
        .unwrap_err();
    assert!(
        matches!(error, BusError::NoHandler { ref subject } if subject == "calc.divide.v1"),
        "{error:?}"
    );

    // Many callers at once share the one connection.
    let root = Context::root();
    let answers =
        futures::future::join_all((0..64).map(|i| client.request(&root, Add { a: i, b: i }))).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().sum, 2 * i as i64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_its_deadline_over_grpc_is_a_timeout() {
    let server = Bus::new(BusConfig::default());
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    server.handle::<Add, _, _>("calc", move |cx, add| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok(Sum {
                sum: add.a + add.b,
                instance: "slow".into(),
                correlation_id: cx.correlation_id().to_string(),
            })
        }
    });
    let client = calc_client(vec![serve(&server).await]);
    let error = client
        .request_within(
            &Context::root(),
            Add { a: 1, b: 1 },
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, BusError::Timeout { ref subject, .. } if subject == "calc.add.v1"),
        "{error:?}"
    );
    release.notify_waiters();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_the_credential_or_with_a_bad_envelope_is_refused_and_no_handler_runs() {
    let (server, calls) = calc_server("one");
    let storage = TestStorage::sqlite();
    let (_events_server, shipping_db, events_base) = shipping_server(&storage).await;
    let base = serve(&server).await;
    let wrong_same_length = format!("Bearer {}", "x".repeat(SECRET.len()));
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(wrong_same_length.as_str()),
        Some(SECRET),
    ] {
        let call = tonic::Request::from_parts(
            metadata("calc.add.v1", authorization),
            Default::default(),
            CallRequest {
                subject: "calc.add.v1".into(),
                body: r#"{"a":1,"b":2}"#.into(),
            },
        );
        let status = raw_client(&base).await.request(call).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{authorization:?}");

        let push = tonic::Request::from_parts(
            metadata("orders.placed.v1", authorization),
            Default::default(),
            EventPush {
                subject: "orders.placed.v1".into(),
                module: "shipping".into(),
                aggregate_id: Uuid::now_v7().to_string(),
                body: format!(r#"{{"order":"{}"}}"#, Uuid::now_v7()).into(),
            },
        );
        let status = raw_client(&events_base)
            .await
            .push_event(push)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    // The transport with a wrong secret gets an error, not an answer.
    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote(
        "calc",
        transport(
            vec![("calc", vec![base.clone()])],
            vec![],
            "not-the-secret",
            HttpTransportConfig::default(),
        ),
    );
    let error = client
        .request(&Context::root(), Add { a: 1, b: 2 })
        .await
        .unwrap_err();
    assert!(matches!(error, BusError::Unavailable { .. }), "{error:?}");

    // The credential, but no envelope, or a body that is not the request.
    let bearer = format!("Bearer {SECRET}");
    let mut bare = MetadataMap::new();
    bare.insert("authorization", bearer.parse().unwrap());
    let call = tonic::Request::from_parts(
        bare,
        Default::default(),
        CallRequest {
            subject: "calc.add.v1".into(),
            body: r#"{"a":1,"b":2}"#.into(),
        },
    );
    let status = raw_client(&base).await.request(call).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains(http::MESSAGE_ID), "{status:?}");
    let call = tonic::Request::from_parts(
        metadata("calc.add.v1", Some(&bearer)),
        Default::default(),
        CallRequest {
            subject: "calc.add.v1".into(),
            body: r#"{"a":"one"}"#.into(),
        },
    );
    let status = raw_client(&base).await.request(call).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Over the size limit.
    let call = tonic::Request::from_parts(
        metadata("calc.add.v1", Some(&bearer)),
        Default::default(),
        CallRequest {
            subject: "calc.add.v1".into(),
            body: vec![b' '; 2 * http::MAX_BODY_BYTES].into(),
        },
    );
    let status = raw_client(&base).await.request(call).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran");
    assert_eq!(applied(&shipping_db).await, 0, "no event was applied");
    assert_eq!(rows(&shipping_db, "inbox").await, 0);

    // The same call with the credential and an envelope is answered.
    let call = tonic::Request::from_parts(
        metadata("calc.add.v1", Some(&bearer)),
        Default::default(),
        CallRequest {
            subject: "calc.add.v1".into(),
            body: r#"{"a":1,"b":2}"#.into(),
        },
    );
    let reply = raw_client(&base).await.request(call).await.unwrap();
    match reply.into_inner().outcome {
        Some(grpc::messages::Outcome::Ok(json)) => {
            let sum: Sum = serde_json::from_slice(&json).unwrap();
            assert_eq!(sum.sum, 3);
        }
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_balanced_round_robin_over_two_instances_and_a_dead_instance_is_skipped() {
    requests_are_balanced_and_skip_a_dead_instance(serve, calc_client).await;
}

// ------------------------------------------------------------------------------ events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_pushed_over_grpc_is_handled_once_and_a_second_push_of_the_same_envelope_changes_nothing()
 {
    let storage = TestStorage::sqlite();
    let (_server, db, base) = shipping_server(&storage).await;
    let transport = events_to_shipping(vec![base], HttpTransportConfig::default());

    let order = Uuid::now_v7();
    let envelope = Context::root().envelope(OrderPlaced::SUBJECT);
    let json: Arc<str> = serde_json::to_string(&OrderPlaced { order })
        .unwrap()
        .into();
    transport
        .publish(envelope.clone(), json.clone(), order)
        .await
        .expect("the first push");
    assert_eq!(
        applied(&db).await,
        1,
        "handled before the push was answered"
    );
    transport
        .publish(envelope, json, order)
        .await
        .expect("the second push");
    assert_eq!(applied(&db).await, 1, "the second push changed nothing");
    assert_eq!(rows(&db, "inbox").await, 1);

    // Emitted in a unit of work on a bus that forwards its events over gRPC: it arrives, and
    // its outbox row goes.
    let orders = Bus::new(BusConfig::default());
    orders.wiring().forward_events_to(transport);
    let orders_db = storage.open("orders").await;
    let outbox = Outbox::start(&orders, orders_db.clone());
    let mut uow = outbox.begin().await.unwrap();
    uow.emit(
        &Context::root(),
        OrderPlaced {
            order: Uuid::now_v7(),
        },
    )
    .await
    .unwrap();
    uow.commit().await.unwrap();
    wait_until("shipping applied the second order", async || {
        applied(&db).await == 2
    })
    .await;
    wait_until("the outbox row is deleted", async || {
        rows(&orders_db, "outbox").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_the_server_keeps_handling_good_events() {
    let storage = TestStorage::sqlite();
    let (_server, db, base) = shipping_server(&storage).await;

    let status = raw_event(&base, "orders.placed.v1", "shipping", "{not json").await;
    assert_eq!(status.unwrap(), "dead_lettered");
    let status = raw_event(&base, "orders.placed.v9", "shipping", "{}").await;
    assert_eq!(status.unwrap(), "dead_lettered");
    // Valid JSON of the wrong shape: the worker cannot decode it and dead-letters it.
    let status = raw_event(&base, "orders.placed.v1", "shipping", r#"{"order":42}"#).await;
    assert_eq!(status.unwrap(), "delivered");
    let letters = dead_letter::list(&db, Some("dead"), 10).await.unwrap();
    let mut subjects: Vec<&str> = letters.iter().map(|l| l.subject.as_str()).collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        ["orders.placed.v1", "orders.placed.v1", "orders.placed.v9"]
    );

    // A module that is not hosted there is refused, not dead-lettered.
    let status = raw_event(&base, "orders.placed.v1", "billing", "{}").await;
    assert_eq!(status.unwrap_err().code(), Code::NotFound);

    let transport = events_to_shipping(vec![base], HttpTransportConfig::default());
    let order = Uuid::now_v7();
    transport
        .publish(
            Context::root().envelope(OrderPlaced::SUBJECT),
            serde_json::to_string(&OrderPlaced { order })
                .unwrap()
                .into(),
            order,
        )
        .await
        .expect("a good event after the poison");
    assert_eq!(applied(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_module_whose_instance_is_down_returns_unavailable_after_its_retries() {
    a_publish_to_a_dead_instance_gives_up_after_its_retries(events_to_shipping).await;
}
