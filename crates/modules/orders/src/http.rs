//! The routes of `orders`, under `/api/v1/orders`.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use banyan_kit::{
    AdminErrors, ApiError, ApiResult, AuthErrors, BodyErrors, ErrorBody, Page, Paged, ServerErrors,
    Waited, Watch,
    auth::{Admin, Caller},
    extract::{Cx, Json, Path, Query},
};
use banyan_orders_contract::OrderSummary;
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    State, domain,
    model::{Error, PlaceOrder, PlaceOrderBody, Status},
    store::{self, Order, OrderRow},
};

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::UnknownProducts { ref field, ref ids } => {
                let details = serde_json::json!({
                    "field": field,
                    "reason": "unknown_product",
                    "product_ids": ids,
                });
                ApiError::new(StatusCode::NOT_FOUND, "unknown_product", error.to_string())
                    .with_details(details)
            }
            Error::NotFound(_) => ApiError::not_found(error.to_string()),
            Error::EmptyCart => ApiError::conflict("empty_cart", error.to_string()),
            Error::InvalidTransition { from, to } => {
                let details = serde_json::json!({ "from": from.as_str(), "to": to.as_str() });
                ApiError::conflict("invalid_transition", error.to_string()).with_details(details)
            }
            Error::Peer(error) => error.into(),
            Error::Storage(error) => error.into(),
        }
    }
}

/// The module's routes, each with its OpenAPI operation.
pub(crate) fn routes(state: Arc<State>) -> OpenApiRouter {
    router().with_state(state)
}

/// The document of the module's routes, without starting it (see `Module::document`).
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    router().into_openapi()
}

/// The routes before their state.
fn router() -> OpenApiRouter<Arc<State>> {
    OpenApiRouter::new()
        .routes(routes!(place))
        .routes(routes!(get_order))
        .routes(routes!(change_status))
        .routes(routes!(list_for_user))
}

type AppState = axum::extract::State<Arc<State>>;

/// `?wait_ms=`: how long to wait for the saga's outcome before answering.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Placing {
    /// How long to wait for the order's outcome, 0 to 30000 ms (bounded by the server's
    /// setting). Without it (or with 0) the order is answered at once.
    #[param(minimum = 0, maximum = 30_000)]
    wait_ms: Option<u64>,
}

/// What a waiting checkout keeps of its request's deadline to answer in.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// The longest wait a client may ask for.
const MAX_WAIT_MS: u64 = 30_000;

/// `POST /api/v1/orders`: places an order for the caller. Without `wait_ms`: 202 with the
/// pending order. With it: 201 with the confirmed or cancelled order once the saga ends, or
/// 202 with the pending order if it has not ended by then.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    operation_id = "place_order",
    summary = "Place an order",
    description = "For the caller: `lines`, or `from_cart: true` to order the cart; optionally \
        a `payment_method`. Prices come from the catalog. Without `wait_ms`: 202 with the \
        pending order. With it: 201 with the confirmed or cancelled order once the checkout \
        saga ends, or 202 with the pending order if it has not ended by then.",
    params(Placing),
    request_body = PlaceOrderBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The saga ended in time: the order, confirmed or cancelled.", body = OrderSummary,
            headers(("location" = String, description = "The order's URL."))),
        (status = 202, description = "Placed, still pending: poll the `Location`.", body = OrderSummary,
            headers(("location" = String, description = "The order's URL."))),
        (status = 400, description = "An unknown or unparsable query parameter, or the body is not JSON.", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "A line names a product the catalog does not know \
            (`unknown_product`, the ids in `details.product_ids`); nothing was placed.", body = ErrorBody),
        (status = 409, description = "`from_cart` and the cart is empty (`empty_cart`).", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "Invalid lines, a bad payment method, `wait_ms` out of \
            range, or a body of the wrong shape.", body = ErrorBody),
        (status = 500, description = "An unexpected failure.", body = ErrorBody),
        (status = 503, description = "The database is busy, or the catalog or cart is unavailable; try again.", body = ErrorBody),
        (status = 504, description = "The catalog or the cart did not answer in time.", body = ErrorBody),
    )
)]
async fn place(
    axum::extract::State(state): AppState,
    caller: Caller,
    cx: Cx,
    Query(placing): Query<Placing>,
    Json(request): Json<PlaceOrder>,
) -> ApiResult<Response> {
    let wait = placing
        .wait_ms
        .map(|ms| {
            if ms > MAX_WAIT_MS {
                return Err(ApiError::invalid("wait_ms", "must be 0 to 30000"));
            }
            Ok(Duration::from_millis(ms).min(state.max_wait))
        })
        .transpose()?;
    let order = domain::prepare(&state.bus, &cx, caller.user_id, request).await?;
    let order_id = order.id.0;
    // Never past the request's own deadline (its route's timeout): a wait cut short is
    // answered 202, not abandoned as a 504 that a breaker would count.
    let wait = wait.map(|wait| match cx.remaining() {
        Some(left) => wait.min(left.saturating_sub(ANSWER_MARGIN)),
        None => wait,
    });
    // Listening before the commit: an outcome that comes at once is not missed. A wait of
    // zero has passed already: it is answered as if there were none.
    let waiting = wait
        .filter(|wait| !wait.is_zero())
        .map(|wait| (state.waiters.watch(order_id), wait));
    let placed = domain::place(&state.outbox, &cx, order).await?;
    let waiting_since = Instant::now();
    let (status, order) = match waiting {
        Some((watch, wait)) => match await_outcome(&state, watch, &placed, wait).await {
            Some(ended) => (StatusCode::CREATED, ended),
            None => (StatusCode::ACCEPTED, placed),
        },
        None => (StatusCode::ACCEPTED, placed),
    };
    let location = format!("/api/v1/orders/{order_id}");
    Ok((
        status,
        [(header::LOCATION, location)],
        Extension(Waited(waiting_since.elapsed())),
        Json(order.summary()),
    )
        .into_response())
}

/// Waits until the order has left `pending` or `wait` has passed. Woken by the saga's
/// handlers in this process (with the order's new row); re-reads the order every `poll` in
/// case the saga ends elsewhere. `None` if the order is still pending at the deadline.
///
/// The order is placed by then, so a failed read is not an error for the client (who might
/// place it again): it is logged, and the wait goes on to its deadline.
async fn await_outcome(
    state: &State,
    mut watch: Watch<Uuid, OrderRow>,
    placed: &Order,
    wait: Duration,
) -> Option<Order> {
    let order_id = placed.row.id();
    let deadline = Instant::now() + wait;
    loop {
        let at_deadline = tokio::select! {
            woken = watch.signalled() => match woken {
                // Lines never change: the row is all that is new.
                Some(row) => return Some(Order { row, lines: placed.lines.clone() }),
                None => false,
            },
            () = tokio::time::sleep(state.poll) => false,
            () = tokio::time::sleep_until(deadline) => true,
        };
        match store::find(state.outbox.db(), order_id).await {
            Ok(Some(order)) if order.row.status() != Status::Pending => return Some(order),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%order_id, %error, "Could not read a placed order while waiting for its outcome.");
            }
        }
        if at_deadline || Instant::now() >= deadline {
            return None;
        }
    }
}

/// Someone else's order is answered 404, as if it did not exist: its existence is not the
/// caller's business.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    operation_id = "get_order",
    summary = "Read an order",
    description = "The owner or an admin, with its price snapshot. Someone else's order is \
        answered 404.",
    params(("id" = Uuid, Path, description = "The order's id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order.", body = OrderSummary),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such order, or not the caller's.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn get_order(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OrderSummary>> {
    // Someone else's order is answered as if it did not exist.
    let order = match domain::find(&state.outbox, id).await? {
        order if caller.may_act_for(order.row.user_id()) => order,
        _ => return Err(Error::NotFound(id).into()),
    };
    Ok(Json(order.summary()))
}

/// `GET /api/v1/orders/user/{user_id}?page=&per_page=`: the owner's or an admin's; newest
/// first.
#[utoipa::path(
    get,
    path = "/api/v1/orders/user/{user_id}",
    operation_id = "list_user_orders",
    summary = "List a user's orders",
    description = "The owner or an admin; newest first, a page at a time.",
    params(("user_id" = Uuid, Path, description = "The user's id."), Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of orders.", body = Paged<OrderSummary>),
        (status = 400, description = "The id is not a UUID, or an unknown or unparsable query parameter.", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "Not the caller's orders.", body = ErrorBody),
        (status = 422, description = "`page` or `per_page` out of range.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn list_for_user(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(user_id): Path<Uuid>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Paged<OrderSummary>>> {
    if !caller.may_act_for(user_id) {
        return Err(ApiError::not_found(format!(
            "user {user_id} does not exist"
        )));
    }
    let page = page.validate()?;
    let db = state.outbox.db();
    let orders = store::list_for_user(db, user_id, page.limit(), page.offset()).await?;
    let total = store::count_for_user(db, user_id).await?;
    Ok(Json(Paged {
        items: orders.iter().map(Order::summary).collect(),
        page: page.page,
        per_page: page.per_page,
        total,
    }))
}

/// The status an order moves to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    /// `shipped` (from confirmed) or `delivered` (from shipped).
    #[schema(example = "shipped", pattern = "^(shipped|delivered)$")]
    status: String,
}

/// `PUT /api/v1/orders/{id}/status`: admins only; confirmed → shipped → delivered.
#[utoipa::path(
    put,
    path = "/api/v1/orders/{id}/status",
    operation_id = "change_order_status",
    summary = "Move an order on",
    description = "Admins only: confirmed → shipped → delivered, one step at a time.",
    params(("id" = Uuid, Path, description = "The order's id.")),
    request_body = StatusChange,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order, moved on.", body = OrderSummary),
        (status = 400, description = "The id is not a UUID, or the body is not JSON.", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "No such order.", body = ErrorBody),
        (status = 409, description = "Not a move the order can make (`invalid_transition`, with details).", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "Not a status, or a body of the wrong shape.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn change_status(
    axum::extract::State(state): AppState,
    _admin: Admin,
    Path(id): Path<Uuid>,
    Json(change): Json<StatusChange>,
) -> ApiResult<Json<OrderSummary>> {
    let to = Status::parse(&change.status).ok_or_else(|| {
        ApiError::invalid(
            "status",
            "must be one of pending, confirmed, cancelled, shipped, delivered \
             (an admin may set shipped or delivered)",
        )
    })?;
    domain::change_status(&state.outbox, id, to).await?;
    let order = domain::find(&state.outbox, id).await?;
    Ok(Json(order.summary()))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use banyan_bus::Context;
    use banyan_cart_contract::CartLine;

    use banyan_orders_contract::{OrderConfirmed, OrderPlaced};
    use banyan_payments_contract::{PaymentCompleted, PaymentId};
    use serde_json::{Value, json};

    use banyan_kit::testing::EventRecorder;

    use super::*;
    use crate::{
        domain::Outcome,
        harness::{self, confirm, order_id, post},
        test_support::call,
    };

    #[tokio::test]
    async fn an_order_is_placed_pending_with_price_snapshots_and_read_by_its_owner_only() {
        let h = harness::start().await;
        let mut placed_events = EventRecorder::<OrderPlaced>::on(&h.db.bus);
        let teapot = h.product("Teapot", 1999, "EUR");
        let cup = h.product("Cup", 450, "EUR");
        let (alice, alice_token) = h.users.alice.clone();
        let body = json!({
            "lines": [
                { "product_id": teapot, "quantity": 1 },
                { "product_id": cup, "quantity": 2 },
                { "product_id": teapot, "quantity": 1 },
            ]
        });
        let (status, location, view) = post(&h, "/api/v1/orders", &alice_token, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{view}");
        let id = order_id(&view);
        assert_eq!(location, format!("/api/v1/orders/{id}"));
        assert_eq!(view["status"], "pending");
        assert_eq!(view["cancel_reason"], Value::Null);
        assert_eq!(view["user_id"], alice.to_string());
        assert_eq!(view["payment_method"], "tok_visa");
        assert_eq!(view["from_cart"], false);
        assert_eq!(
            view["total"],
            json!({ "amount_minor": 2 * 1999 + 2 * 450, "currency": "EUR" })
        );
        assert_eq!(view["lines"].as_array().unwrap().len(), 2);
        assert_eq!(
            view["lines"][0],
            json!({
                "product_id": teapot,
                "name": "Teapot",
                "unit_price": { "amount_minor": 1999, "currency": "EUR" },
                "quantity": 2,
                "line_total": { "amount_minor": 3998, "currency": "EUR" },
            })
        );
        assert!(view["created_at"].as_str().unwrap().ends_with('Z'));

        // A later price change does not touch the order.
        h.product("Teapot again", 1, "EUR");
        let (status, _, read) = call(&h.router, "GET", &location, Some(&alice_token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read, view);
        let (status, _, _) = call(&h.router, "GET", &location, Some(&h.users.bob.1), None).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "someone else's order does not exist"
        );
        let (status, _, _) = call(&h.router, "GET", &location, Some(&h.users.admin), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = call(&h.router, "GET", &location, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        placed_events.next_within(Duration::from_secs(5)).await;
        let placed = placed_events.all();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].order_id.0, id);
        assert_eq!(placed[0].total.amount_minor, 4898);
        assert_eq!(placed[0].lines[0].quantity, 2);
        assert!(!placed[0].from_cart);
    }

    #[tokio::test]
    async fn a_waiting_client_gets_the_confirmed_order_when_the_payment_completes() {
        let h = harness::start().await;
        let mut confirmed = EventRecorder::<OrderConfirmed>::on(&h.db.bus);
        // Payments, played by a subscriber that charges every order at once.
        let bus = h.db.bus.clone();
        h.db.bus.subscribe::<OrderPlaced, _, _>(
            "payments",
            move |placed: banyan_bus::Delivered<OrderPlaced>| {
                let bus = bus.clone();
                async move {
                    let paid = PaymentCompleted {
                        payment_id: PaymentId::new(),
                        order_id: placed.order_id.0,
                        amount: placed.total,
                    };
                    bus.publish(placed.context(), paid).await?;
                    Ok(())
                }
            },
        );
        let teapot = h.product("Teapot", 1999, "EUR");
        let body = json!({ "lines": [{ "product_id": teapot, "quantity": 3 }], "payment_method": "tok_mastercard" });
        let (status, location, view) =
            post(&h, "/api/v1/orders?wait_ms=10000", &h.users.alice.1, body).await;
        assert_eq!(status, StatusCode::CREATED, "{view}");
        assert_eq!(view["status"], "confirmed");
        assert_eq!(view["payment_method"], "tok_mastercard");
        assert_eq!(location, format!("/api/v1/orders/{}", order_id(&view)));
        confirmed.next_within(Duration::from_secs(5)).await;
        let confirmed = confirmed.all();
        assert_eq!(confirmed.len(), 1);
        assert_eq!(confirmed[0].order_id.0, order_id(&view));
        assert_eq!(confirmed[0].total.amount_minor, 3 * 1999);
        assert_eq!(h.state.waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_wait_that_outlasts_the_saga_answers_202_with_the_pending_order() {
        let h = harness::start().await;
        let teapot = h.product("Teapot", 1999, "EUR");
        let body = json!({ "lines": [{ "product_id": teapot, "quantity": 1 }] });
        for uri in ["/api/v1/orders?wait_ms=250", "/api/v1/orders?wait_ms=0"] {
            let (status, location, view) = post(&h, uri, &h.users.alice.1, body.clone()).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{uri}");
            assert_eq!(view["status"], "pending");
            assert!(location.ends_with(view["id"].as_str().unwrap()));
            assert_eq!(h.state.waiters.len(), 0, "the waiter is gone");
        }
    }

    #[tokio::test]
    async fn a_wait_sees_an_outcome_reached_in_another_process_by_reading_the_database() {
        let h = harness::start().await;
        let teapot = h.product("Teapot", 1999, "EUR");
        let router = h.router.clone();
        let token = h.users.alice.1.clone();
        let waiting = tokio::spawn(async move {
            let body = json!({ "lines": [{ "product_id": teapot, "quantity": 1 }] });
            call(
                &router,
                "POST",
                "/api/v1/orders?wait_ms=10000",
                Some(&token),
                Some(body),
            )
            .await
        });
        // Find the order, then end it the way a handler elsewhere would: without a signal here.
        let id = loop {
            let page = store::list_for_user(h.state.outbox.db(), h.users.alice.0, 1, 0)
                .await
                .unwrap();
            if let Some(order) = page.first() {
                break order.row.id();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut uow = h.state.outbox.begin().await.unwrap();
        domain::end_saga(
            &mut uow,
            &Context::root(),
            id,
            Outcome::Cancel("payment_declined".into()),
        )
        .await
        .unwrap();
        uow.commit().await.unwrap();
        let (status, _, view) = waiting.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{view}");
        assert_eq!(view["status"], "cancelled");
        assert_eq!(view["cancel_reason"], "payment_declined");
    }

    #[tokio::test]
    async fn an_order_from_the_cart_takes_its_lines_and_an_empty_cart_is_refused() {
        let h = harness::start().await;
        let (alice, token) = h.users.alice.clone();
        let body = json!({ "from_cart": true });
        let (status, _, error) = post(&h, "/api/v1/orders", &token, body.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error["error"]["code"], "empty_cart");
        let teapot = h.product("Teapot", 1999, "EUR");
        h.carts.lock().unwrap().insert(
            alice,
            vec![CartLine {
                product_id: teapot,
                quantity: 2,
            }],
        );
        let (status, _, view) = post(&h, "/api/v1/orders", &token, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{view}");
        assert_eq!(view["from_cart"], true);
        assert_eq!(view["lines"][0]["quantity"], 2);
        assert_eq!(view["total"]["amount_minor"], 3998);
    }

    #[tokio::test]
    async fn bad_orders_are_answered_with_a_client_error_never_a_server_error() {
        let h = harness::start().await;
        let teapot = h.product("Teapot", 1999, "EUR");
        let dollars = h.product("Mug", 500, "USD");
        let ghost = Uuid::now_v7();
        let line =
            |quantity: Value| json!({ "lines": [{ "product_id": teapot, "quantity": quantity }] });
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let cases: Vec<(&str, Value, StatusCode)> = vec![
            ("/api/v1/orders", json!({}), unprocessable),
            ("/api/v1/orders", json!({ "lines": [] }), unprocessable),
            (
                "/api/v1/orders",
                json!({ "lines": null, "from_cart": true }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1 }], "payment_method": null }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "from_cart": false }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1 }], "from_cart": true }),
                unprocessable,
            ),
            ("/api/v1/orders", line(json!(0)), unprocessable),
            ("/api/v1/orders", line(json!(-1)), unprocessable),
            ("/api/v1/orders", line(json!(1001)), unprocessable),
            ("/api/v1/orders", line(json!(1.5)), unprocessable),
            ("/api/v1/orders", line(json!("3")), unprocessable),
            ("/api/v1/orders", line(json!(u64::MAX)), unprocessable),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1, "unit_price": 1 }] }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1 }], "total": 1 }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1 }], "status": "confirmed" }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1 }], "user_id": ghost }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": "nope", "quantity": 1 }] }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1 }], "payment_method": "Tok Visa" }),
                unprocessable,
            ),
            (
                "/api/v1/orders",
                json!({ "lines": [{ "product_id": teapot, "quantity": 1 }, { "product_id": dollars, "quantity": 1 }] }),
                unprocessable,
            ),
            (
                "/api/v1/orders?wait_ms=abc",
                line(json!(1)),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/v1/orders?wait_ms=-1",
                line(json!(1)),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/v1/orders?wait_ms=30001",
                line(json!(1)),
                unprocessable,
            ),
            (
                "/api/v1/orders?wait=1",
                line(json!(1)),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (uri, body, expected) in cases {
            let (status, _, answer) = post(&h, uri, &h.users.alice.1, body.clone()).await;
            assert_eq!(status, expected, "{uri} {body}: {answer}");
            assert!(
                answer["error"]["code"].is_string(),
                "{uri} {body}: {answer}"
            );
        }
        let (status, _, _) = call(
            &h.router,
            "POST",
            "/api/v1/orders",
            None,
            Some(line(json!(1))),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // An unknown product is not found, and named.
        let body = json!({ "lines": [{ "product_id": teapot, "quantity": 1 }, { "product_id": ghost, "quantity": 1 }] });
        let (status, _, answer) = post(&h, "/api/v1/orders", &h.users.alice.1, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(answer["error"]["code"], "unknown_product");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&ghost.to_string()),
            "{answer}"
        );
        assert_eq!(answer["error"]["details"]["product_ids"], json!([ghost]));

        // Nothing was written by any of them.
        let page = store::list_for_user(h.state.outbox.db(), h.users.alice.0, 100, 0)
            .await
            .unwrap();
        assert!(page.is_empty());
    }

    #[tokio::test]
    async fn admins_move_confirmed_orders_to_shipped_then_delivered_and_nothing_else() {
        let h = harness::start().await;
        let teapot = h.product("Teapot", 1999, "EUR");
        let body = json!({ "lines": [{ "product_id": teapot, "quantity": 1 }] });
        let (_, location, view) = post(&h, "/api/v1/orders", &h.users.alice.1, body).await;
        let uri = format!("{location}/status");
        let admin = h.users.admin.clone();
        let set = |status: &str| json!({ "status": status });
        let put = |token: Option<String>, body: Value| {
            let (router, uri) = (h.router.clone(), uri.clone());
            async move { call(&router, "PUT", &uri, token.as_deref(), Some(body)).await }
        };
        assert_eq!(put(None, set("shipped")).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            put(Some(h.users.alice.1.clone()), set("shipped")).await.0,
            StatusCode::FORBIDDEN
        );
        let (status, _, answer) = put(Some(admin.clone()), set("shipped")).await;
        assert_eq!(status, StatusCode::CONFLICT, "a pending order cannot ship");
        assert_eq!(answer["error"]["code"], "invalid_transition");
        confirm(&h, order_id(&view)).await;
        assert_eq!(
            put(Some(admin.clone()), set("lost")).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            put(Some(admin.clone()), json!({ "status": "shipped", "x": 1 }))
                .await
                .0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            put(Some(admin.clone()), set("delivered")).await.0,
            StatusCode::CONFLICT
        );
        assert_eq!(
            put(Some(admin.clone()), set("cancelled")).await.0,
            StatusCode::CONFLICT
        );
        let (status, _, shipped) = put(Some(admin.clone()), set("shipped")).await;
        assert_eq!(status, StatusCode::OK, "{shipped}");
        assert_eq!(shipped["status"], "shipped");
        assert_eq!(
            put(Some(admin.clone()), set("shipped")).await.0,
            StatusCode::CONFLICT
        );
        let (status, _, delivered) = put(Some(admin.clone()), set("delivered")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(delivered["status"], "delivered");
        assert_eq!(
            put(Some(admin.clone()), set("confirmed")).await.0,
            StatusCode::CONFLICT
        );
        let ghost = format!("/api/v1/orders/{}/status", Uuid::now_v7());
        let (status, _, _) =
            call(&h.router, "PUT", &ghost, Some(&admin), Some(set("shipped"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = call(
            &h.router,
            "PUT",
            "/api/v1/orders/nope/status",
            Some(&admin),
            Some(set("shipped")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_users_orders_are_listed_newest_first_to_them_and_admins_only() {
        let h = harness::start().await;
        let teapot = h.product("Teapot", 1999, "EUR");
        let (alice, token) = h.users.alice.clone();
        let mut ids = Vec::new();
        for quantity in 1..=3 {
            let body = json!({ "lines": [{ "product_id": teapot, "quantity": quantity }] });
            let (_, _, view) = post(&h, "/api/v1/orders", &token, body).await;
            ids.push(order_id(&view));
        }
        let uri = format!("/api/v1/orders/user/{alice}?page=1&per_page=2");
        let (status, _, page) = call(&h.router, "GET", &uri, Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 3);
        assert_eq!(page["page"], 1);
        assert_eq!(page["per_page"], 2);
        let listed: Vec<Uuid> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(order_id)
            .collect();
        assert_eq!(listed, vec![ids[2], ids[1]]);
        assert_eq!(page["items"][0]["lines"][0]["quantity"], 3);
        let uri2 = format!("/api/v1/orders/user/{alice}?page=2&per_page=2");
        let (_, _, second) = call(&h.router, "GET", &uri2, Some(&h.users.admin), None).await;
        let listed: Vec<Uuid> = second["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(order_id)
            .collect();
        assert_eq!(listed, vec![ids[0]]);
        let (status, _, _) = call(&h.router, "GET", &uri, Some(&h.users.bob.1), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        for bad in ["per_page=0", "per_page=101", "page=0"] {
            let uri = format!("/api/v1/orders/user/{alice}?{bad}");
            let (status, _, _) = call(&h.router, "GET", &uri, Some(&token), None).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
        let uri = format!("/api/v1/orders/user/{alice}?sort=asc");
        let (status, _, _) = call(&h.router, "GET", &uri, Some(&token), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
