//! One trace across every process: a checkout through a split, sent with the client's own
//! `traceparent`, reaches an OTLP/HTTP receiver (this test's, decoding with the protocol's own
//! types) as spans of that one trace from each process it touched, each span's parent among
//! them, over HTTP (with TLS) in one topology and NATS in the other.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use banyan_app::config;
use banyan_e2e::{Engine, TestApp, cluster::Topology, eventually_within};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value,
};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::json;

/// A span as received: its process (the resource's `service.name`), name and ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(inbox): State<Inbox>, body: Bytes) -> StatusCode {
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut inbox = inbox.lock().unwrap();
    for resource_spans in export.resource_spans {
        let service = (resource_spans.resource.iter())
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                inbox.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    StatusCode::OK
}

/// An OTLP/HTTP traces endpoint on a free port, and what it received.
async fn receiver() -> (String, Inbox) {
    let inbox = Inbox::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

/// Checks out with a `traceparent` of the test's own, then waits until the spans of that trace
/// come from each of `processes` and form one tree under the client's span.
async fn one_trace_across(app: &TestApp, inbox: &Inbox, processes: &[&str]) {
    let admin = app.admin_token().await;
    let product = app.product(&admin, "TRACE-1", "tea", 450).await;
    assert_eq!(app.stock(&admin, &product, 5).await.status, StatusCode::OK);
    let (_, token) = app.customer("tess").await;
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let client_span = "00f067aa0ba902b7";
    let reply = app
        .client
        .post(app.url("/api/v1/orders?wait_ms=30000"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&json!({ "lines": [{ "product_id": product, "quantity": 1 }], "payment_method": "tok_visa" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let order: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(order["status"], "confirmed", "{order}");

    let expected: BTreeSet<String> = processes.iter().map(|p| format!("banyan-{p}")).collect();
    let of_trace = || -> Vec<Received> {
        (inbox.lock().unwrap().iter())
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    };
    eventually_within(Duration::from_secs(20), "spans from every process", || {
        let services: BTreeSet<String> = of_trace().into_iter().map(|s| s.service).collect();
        let expected = expected.clone();
        // The confirmation's handling is among the checkout's last hops.
        let confirmed = (of_trace().iter()).any(|s| s.name == "event orders.order_confirmed.v1");
        async move { expected.is_subset(&services) && confirmed }
    })
    .await;
    // A moment for the last batch of every process.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = of_trace();
    let by_id: BTreeMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "a span id twice: {spans:#?}");
    let roots: Vec<&Received> = spans
        .iter()
        .filter(|s| s.parent_span_id == client_span)
        .collect();
    assert_eq!(roots.len(), 1, "one span under the client's: {spans:#?}");
    assert_eq!(roots[0].service, "banyan-main", "{spans:#?}");
    assert_eq!(roots[0].name, "HTTP POST", "{spans:#?}");
    for span in &spans {
        if span.parent_span_id != client_span {
            assert!(
                by_id.contains_key(span.parent_span_id.as_str()),
                "the parent of {span:?} is not in the trace: {spans:#?}"
            );
        }
    }
    // The saga's hops, each where the topology runs it.
    for hop in [
        "event orders.order_placed.v1",
        "event inventory.inventory_reserved.v1",
        "event payments.payment_completed.v1",
        "event orders.order_confirmed.v1",
    ] {
        assert!(
            spans.iter().any(|s| s.name == hop),
            "no span `{hop}`: {spans:#?}"
        );
    }
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    println!("{} spans from {services:?}", spans.len());
}

fn traced(url: String) -> impl FnOnce(figment::Figment) -> figment::Figment {
    move |figment| {
        config::with(
            figment,
            "traces",
            json!({ "enabled": true, "endpoint": url, "export_interval_ms": 100 }),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_over_https_is_one_trace_across_main_payments_and_notifications() {
    let (url, inbox) = receiver().await;
    let Some(app) = TestApp::spawn_split(
        Engine::Sqlite,
        Topology::payments_and_notifications_over_https(),
        traced(url),
    )
    .await
    else {
        return;
    };
    one_trace_across(&app, &inbox, &["main", "payments", "notifications"]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_over_nats_is_one_trace_across_main_inventory_and_payments() {
    let (url, inbox) = receiver().await;
    let Some(app) = TestApp::spawn_split(
        Engine::Postgres,
        Topology::inventory_and_two_payments_over_nats(),
        traced(url),
    )
    .await
    else {
        return;
    };
    one_trace_across(&app, &inbox, &["main", "inventory", "payments"]).await;
    app.stop().await;
}
