//! Request/reply: the errors a caller can branch on, and rejections that arrive intact, in
//! process and through a transport (where JSON begins).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use banyan_bus::{
    Bus, BusConfig, BusError, Context, CorrelationId, Envelope, Message, Rejection, RemoteReply,
    Request, Transport,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// A guard against hangs only: every call here is expected to return in milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reserve {
    product: String,
    quantity: u32,
}

impl Message for Reserve {
    const SUBJECT: &str = "stock.reserve.v1";
}

impl Request for Reserve {
    type Response = Reserved;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reserved {
    product: String,
    quantity: u32,
    reservation: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unanswered;

impl Message for Unanswered {
    const SUBJECT: &str = "nobody.unanswered.v1";
}

impl Request for Unanswered {
    type Response = ();
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stall;

impl Message for Stall {
    const SUBJECT: &str = "stall.stall.v1";
}

impl Request for Stall {
    type Response = ();
}

const AVAILABLE: u32 = 5;

fn insufficient_stock(product: &str, wanted: u32) -> Rejection {
    Rejection::new(
        "insufficient_stock",
        format!("only {AVAILABLE} {product} left"),
    )
    .with_details(json!({ "product": product, "wanted": wanted, "available": AVAILABLE }))
}

/// Registers the stock module's `Reserve` handler; it records the correlation id of each call.
fn serve_stock(bus: &Bus) -> Arc<Mutex<Vec<String>>> {
    let correlations = Arc::new(Mutex::new(Vec::new()));
    let seen = correlations.clone();
    bus.handle::<Reserve, _, _>("stock", move |cx, request| {
        seen.lock()
            .expect("lock")
            .push(cx.correlation_id().to_string());
        async move {
            if request.quantity > AVAILABLE {
                return Err(insufficient_stock(&request.product, request.quantity));
            }
            Ok(Reserved {
                product: request.product,
                quantity: request.quantity,
                reservation: Uuid::now_v7(),
            })
        }
    });
    correlations
}

fn reserve(quantity: u32) -> Reserve {
    Reserve {
        product: "widget".into(),
        quantity,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_no_handler_fails_at_once() {
    let bus = Bus::new(BusConfig::default());
    let cx = Context::root();
    let call = bus.request_within(&cx, Unanswered, Duration::from_secs(3_600));
    let outcome = tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("a request with no handler waited for its deadline");
    assert_eq!(
        outcome,
        Err(BusError::NoHandler {
            subject: Unanswered::SUBJECT.into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_fails_with_a_timeout() {
    let bus = Bus::new(BusConfig::default());
    let entered = Arc::new(AtomicUsize::new(0));
    bus.handle::<Stall, _, _>("stall", {
        let entered = entered.clone();
        move |_, _| {
            entered.fetch_add(1, Ordering::SeqCst);
            // Never answers.
            std::future::pending()
        }
    });
    let deadline = Duration::from_millis(50);
    let cx = Context::root();
    let call = bus.request_within(&cx, Stall, deadline);
    let outcome = tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("a request outlived its deadline");
    let error = outcome.expect_err("a handler that never answers cannot succeed");
    assert_eq!(
        error,
        BusError::Timeout {
            subject: Stall::SUBJECT.into(),
            after: deadline
        }
    );
    assert!(error.is_transient());
    assert_eq!(
        entered.load(Ordering::SeqCst),
        1,
        "the handler got the request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_travels_back_intact() {
    let bus = Bus::new(BusConfig::default());
    serve_stock(&bus);
    let cx = Context::root();

    let reserved = bus.request(&cx, reserve(2)).await.expect("reserving 2");
    assert_eq!(
        (reserved.product.as_str(), reserved.quantity),
        ("widget", 2)
    );

    let error = bus
        .request(&cx, reserve(9))
        .await
        .expect_err("reserving more than the stock");
    assert_eq!(error, BusError::Rejected(insufficient_stock("widget", 9)));
    let rejection = error.rejection().expect("a rejection");
    assert!(rejection.is("insufficient_stock"));
    assert_eq!(rejection.details["available"], json!(AVAILABLE));
    assert!(!error.is_transient());
}

/// A transport to a "remote" bus in the same process, through the same JSON path a network
/// transport takes: what proves the seam.
struct Loopback {
    server: Bus,
    requests: AtomicUsize,
}

impl Transport for Loopback {
    fn placement(&self) -> &'static str {
        "loopback"
    }

    fn request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<RemoteReply, BusError>> {
        Box::pin(async move {
            self.requests.fetch_add(1, Ordering::SeqCst);
            // What crosses the wire is JSON, and the envelope travels beside it.
            let decoded: serde_json::Value =
                serde_json::from_slice(&body).expect("the request body is JSON");
            if envelope.subject == Reserve::SUBJECT {
                assert_eq!(
                    decoded["product"],
                    json!("widget"),
                    "unexpected body {decoded}"
                );
            }
            let envelope: Envelope = serde_json::from_str(
                &serde_json::to_string(&envelope).expect("encoding the envelope"),
            )
            .expect("decoding the envelope");
            self.server
                .inbound("loopback")
                .serve_remote_request(envelope, &body, deadline)
                .await
        })
    }

    fn publish(
        &self,
        envelope: Envelope,
        _json: Arc<str>,
        _aggregate: uuid::Uuid,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            Err(BusError::Unavailable {
                subject: envelope.subject,
                reason: "the loopback carries requests only".into(),
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_request_through_a_transport_gets_its_answer_and_its_rejection_intact() {
    let server = Bus::new(BusConfig::default());
    let correlations = serve_stock(&server);
    let client = Bus::new(BusConfig::default());
    let loopback = Arc::new(Loopback {
        server: server.clone(),
        requests: AtomicUsize::new(0),
    });
    client.wiring().set_remote("stock", loopback.clone());
    assert!(!client.wiring().handles(Reserve::SUBJECT));

    let cx = Context::new(
        CorrelationId::parse("checkout-42").expect("a valid id"),
        None,
    );
    let reserved = tokio::time::timeout(HANG_GUARD, client.request(&cx, reserve(3)))
        .await
        .expect("hung")
        .expect("reserving 3 through the transport");
    assert_eq!(
        (reserved.product.as_str(), reserved.quantity),
        ("widget", 3)
    );

    let error = tokio::time::timeout(HANG_GUARD, client.request(&cx, reserve(7)))
        .await
        .expect("hung")
        .expect_err("reserving more than the stock through the transport");
    assert_eq!(error, BusError::Rejected(insufficient_stock("widget", 7)));

    assert_eq!(
        loopback.requests.load(Ordering::SeqCst),
        2,
        "both went through the transport"
    );
    assert_eq!(
        *correlations.lock().expect("lock"),
        vec!["checkout-42".to_owned(), "checkout-42".to_owned()],
        "the correlation id crossed the transport"
    );

    // A subject the remote side does not answer is reported as such, not as a timeout.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Audit;
    impl Message for Audit {
        const SUBJECT: &str = "stock.audit.v1";
    }
    impl Request for Audit {
        type Response = ();
    }
    let call = client.request_within(&cx, Audit, Duration::from_secs(3_600));
    let outcome = tokio::time::timeout(HANG_GUARD, call).await.expect("hung");
    assert_eq!(
        outcome,
        Err(BusError::NoHandler {
            subject: Audit::SUBJECT.into()
        })
    );
}
