//! The HTTP adapter over real sockets on 127.0.0.1: requests and rejections, the shared
//! secret, round robin over instances, events pushed to a subscribing module (once, through
//! its inbox), poison events, and a publish that gives up on a module that is down.

mod support;

use std::sync::{Arc, atomic::Ordering};

use banyan_bus::{
    Bus, BusConfig, BusError, Context, CorrelationId, Message, Outbox, Rejection, Transport,
    dead_letter,
    http::{
        self, AGGREGATE_ID, HttpTransport, HttpTransportConfig, SharedSecret, StaticInstances,
        StaticSubscribers, routes,
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
use uuid::Uuid;

const SECRET: &str = "test-shared-secret-0123456789";

// ------------------------------------------------------------------------------ helpers

/// Serves `bus`'s endpoints on a fresh port of 127.0.0.1; returns the base URL.
async fn serve(bus: &Bus) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a port for the server");
    let address = listener.local_addr().expect("the server's address");
    let app = routes(bus.clone(), SharedSecret::new(SECRET).expect("a secret"));
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
) -> Arc<HttpTransport> {
    Arc::new(
        HttpTransport::new(
            Arc::new(StaticInstances::new(instances)),
            Arc::new(StaticSubscribers::new(subscribers)),
            SharedSecret::new(secret).expect("a secret"),
            config,
        )
        .expect("building the HTTP transport"),
    )
}

/// A client bus that reaches module `calc` over HTTP at `instances`.
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
fn events_to_shipping(instances: Vec<String>, config: HttpTransportConfig) -> Arc<HttpTransport> {
    transport(
        vec![("shipping", instances)],
        vec![("orders.placed.v1", vec!["shipping"])],
        SECRET,
        config,
    )
}

/// A raw event POST with a full envelope, as another process would send it.
async fn raw_event(base: &str, subject: &str, module: &str, body: &'static str) -> (u16, String) {
    let envelope = Context::root().envelope(subject);
    let response = banyan_bus::http::client_builder()
        .build()
        .expect("an HTTP client")
        .post(format!(
            "{base}{}?module={module}",
            http::event_path(subject)
        ))
        .headers(http::envelope_headers(&envelope).expect("envelope headers"))
        .header(AGGREGATE_ID, Uuid::now_v7().to_string())
        .header("authorization", format!("Bearer {SECRET}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("posting an event");
    let status = response.status().as_u16();
    (status, response.text().await.expect("reading the answer"))
}

fn status_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
    value["status"].as_str().unwrap_or_default().to_owned()
}

// ------------------------------------------------------------------------------ requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_http_gets_its_answer_and_a_rejection_intact() {
    let (server, calls) = calc_server("one");
    let base = serve(&server).await;
    let client = calc_client(vec![base]);
    let cx = Context::new(CorrelationId::parse("req-http-1").unwrap(), None);

    let sum = client.request(&cx, Add { a: 2, b: 3 }).await.unwrap();
    assert_eq!(sum.sum, 5);
    assert_eq!(
        sum.correlation_id, "req-http-1",
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

    // A subject of the remote module that nothing serves there.
    let error = client
        .request(&cx, Divide { a: 1, b: 0 })
        .await
        .unwrap_err();
    assert!(
        matches!(error, BusError::NoHandler { ref subject } if subject == "calc.divide.v1"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_its_deadline_over_http_is_a_timeout() {
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
    let deadline = std::time::Duration::from_millis(100);
    let error = client
        .request_within(&Context::root(), Add { a: 1, b: 1 }, deadline)
        .await
        .unwrap_err();
    assert!(
        matches!(error, BusError::Timeout { ref subject, .. } if subject == "calc.add.v1"),
        "{error:?}"
    );
    release.notify_waiters();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_or_wrongly_authenticated_call_is_refused_with_401_and_no_handler_runs()
{
    let (server, calls) = calc_server("one");
    let storage = TestStorage::sqlite();
    let (_events_server, shipping_db, events_base) = shipping_server(&storage).await;
    let base = serve(&server).await;
    let raw = banyan_bus::http::client_builder()
        .build()
        .expect("an HTTP client");
    let envelope = Context::root().envelope("calc.add.v1");
    let wrong_same_length = format!("Bearer {}", "x".repeat(SECRET.len()));
    let credentials = [
        None,
        Some("Bearer wrong"),
        Some(wrong_same_length.as_str()),
        Some(SECRET),
        Some("Basic dGVzdDp0ZXN0"),
    ];

    for authorization in credentials {
        let mut call = raw
            .post(format!("{base}{}", http::request_path("calc.add.v1")))
            .headers(http::envelope_headers(&envelope).unwrap())
            .body(r#"{"a":1,"b":2}"#);
        if let Some(authorization) = authorization {
            call = call.header("authorization", authorization);
        }
        let response = call.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["kind"], "unauthorized");

        let mut push = raw
            .post(format!(
                "{events_base}{}?module=shipping",
                http::event_path("orders.placed.v1")
            ))
            .headers(http::envelope_headers(&envelope).unwrap())
            .header(AGGREGATE_ID, Uuid::now_v7().to_string())
            .body(format!(r#"{{"order":"{}"}}"#, Uuid::now_v7()));
        if let Some(authorization) = authorization {
            push = push.header("authorization", authorization);
        }
        assert_eq!(push.send().await.unwrap().status().as_u16(), 401);
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

    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran");
    assert_eq!(applied(&shipping_db).await, 0, "no event was applied");
    assert_eq!(rows(&shipping_db, "inbox").await, 0);

    // The same call with the secret is answered: the refusals were about the secret alone.
    let response = raw
        .post(format!("{base}{}", http::request_path("calc.add.v1")))
        .headers(http::envelope_headers(&envelope).unwrap())
        .header("authorization", format!("Bearer {SECRET}"))
        .body(r#"{"a":1,"b":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let sum: Sum = response.json().await.unwrap();
    assert_eq!(sum.sum, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_bad_envelope_or_an_oversized_body_is_refused_with_json() {
    let (server, calls) = calc_server("one");
    let base = serve(&server).await;
    let raw = banyan_bus::http::client_builder()
        .build()
        .expect("an HTTP client");
    let url = format!("{base}{}", http::request_path("calc.add.v1"));
    let bearer = format!("Bearer {SECRET}");

    // No envelope at all.
    let response = raw
        .post(&url)
        .header("authorization", &bearer)
        .body(r#"{"a":1,"b":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "codec");
    assert!(
        body["error"]["reason"]
            .as_str()
            .unwrap()
            .contains(http::MESSAGE_ID),
        "{body}"
    );

    // A body that is not the request.
    let envelope = Context::root().envelope("calc.add.v1");
    let response = raw
        .post(&url)
        .headers(http::envelope_headers(&envelope).unwrap())
        .header("authorization", &bearer)
        .body(r#"{"a":"one"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "codec");

    // Over the size limit.
    let response = raw
        .post(&url)
        .headers(http::envelope_headers(&envelope).unwrap())
        .header("authorization", &bearer)
        .body(vec![b' '; http::MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "codec");

    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_balanced_round_robin_over_two_instances_and_a_dead_instance_is_skipped() {
    requests_are_balanced_and_skip_a_dead_instance(serve, calc_client).await;
}

// ------------------------------------------------------------------------------ events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_pushed_over_http_is_handled_once_and_a_second_push_of_the_same_envelope_changes_nothing()
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

    // An event nobody elsewhere subscribes to needs no push at all.
    let other = Context::root().envelope("orders.cancelled.v1");
    transport
        .publish(other, "{}".into(), Uuid::now_v7())
        .await
        .expect("nothing to push");

    // Published on a bus that forwards its events: it arrives the same way.
    let client = Bus::new(BusConfig::default());
    client.wiring().forward_events_to(transport);
    client
        .publish(
            &Context::root(),
            OrderPlaced {
                order: Uuid::now_v7(),
            },
        )
        .await
        .unwrap();
    wait_until("the forwarded event is applied", async || {
        applied(&db).await == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_emitted_in_a_unit_of_work_reaches_the_remote_module_and_leaves_the_outbox() {
    let storage = TestStorage::sqlite();
    let (_server, shipping_db, base) = shipping_server(&storage).await;
    let orders = Bus::new(BusConfig::default());
    orders.wiring().forward_events_to(events_to_shipping(
        vec![base],
        HttpTransportConfig::default(),
    ));
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

    wait_until("shipping applied the event", async || {
        applied(&shipping_db).await == 1
    })
    .await;
    wait_until("the outbox row is deleted", async || {
        rows(&orders_db, "outbox").await == 0
    })
    .await;
    assert_eq!(applied(&shipping_db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_answered_dead_lettered_is_listed_and_the_server_keeps_handling_good_events()
 {
    let storage = TestStorage::sqlite();
    let (_server, db, base) = shipping_server(&storage).await;

    let (status, body) = raw_event(&base, "orders.placed.v1", "shipping", "{not json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&body), "dead_lettered");

    let (status, body) = raw_event(
        &base,
        "orders.placed.v9",
        "shipping",
        r#"{"order":"0190c1d2-0000-7000-8000-000000000000","shiny":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&body), "dead_lettered");

    // Valid JSON of the wrong shape: the subscriber's worker cannot decode it and
    // dead-letters it; the push is answered 200 all the same, so it is not sent again.
    let (status, body) = raw_event(&base, "orders.placed.v1", "shipping", r#"{"order":42}"#).await;
    assert_eq!(status, 200, "{body}");

    let letters = dead_letter::list(&db, Some("dead"), 10).await.unwrap();
    let mut subjects: Vec<&str> = letters.iter().map(|l| l.subject.as_str()).collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        ["orders.placed.v1", "orders.placed.v1", "orders.placed.v9"]
    );
    assert!(
        letters.iter().all(|l| l.module == "shipping"),
        "{letters:?}"
    );

    // A module that is not hosted there is not dead-lettered but refused (a wiring mistake).
    let (status, _) = raw_event(&base, "orders.placed.v1", "billing", "{}").await;
    assert_eq!(status, 404);

    // Good events still go through.
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
    assert_eq!(
        dead_letter::list(&db, Some("dead"), 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_module_whose_instance_is_down_returns_unavailable_after_its_retries() {
    a_publish_to_a_dead_instance_gives_up_after_its_retries(events_to_shipping).await;
}
