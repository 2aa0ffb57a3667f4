//! What `orders` answers on the bus, and the saga events it listens to.
//!
//! Each saga handler records the event in the inbox, ends the order only if it is still
//! pending, and emits the order's event, all in one unit of work; after the commit it wakes
//! whoever waits for the order.

use std::sync::Arc;

use banyan_bus::{Context, Delivered, Event, HandlerError, ModuleBus, Rejection};
use banyan_inventory_contract::InventoryReservationFailed;
use banyan_kit::Invalid;
use banyan_orders_contract::{GetOrder, ListOrders, OrderSummary};
use banyan_payments_contract::{PaymentCompleted, PaymentFailed};
use serde_json::json;
use uuid::Uuid;

use crate::{
    State,
    domain::{self, Ended, Outcome},
    model::Error,
    store,
};

/// The cancel reason of an order whose stock could not be reserved.
const OUT_OF_STOCK: &str = "out_of_stock";

pub(crate) fn register(bus: &ModuleBus, state: &Arc<State>) {
    bus.handle(state, get_order);
    bus.handle(state, list_orders);
    bus.subscribe(state, on_payment_completed);
    bus.subscribe(state, on_payment_failed);
    bus.subscribe(state, on_inventory_reservation_failed);
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::UnknownProducts { ref ids, .. } => {
                let ids = ids.clone();
                Rejection::new("unknown_product", error.to_string())
                    .with_details(json!({ "product_ids": ids }))
            }
            Error::NotFound(id) => Rejection::not_found("order", id),
            Error::EmptyCart => Rejection::conflict("empty_cart", error.to_string()),
            Error::InvalidTransition { from, to } => {
                Rejection::conflict("invalid_transition", error.to_string())
                    .with_details(json!({ "from": from.as_str(), "to": to.as_str() }))
            }
            Error::Peer(error) => Rejection::internal(error),
            Error::Storage(error) => Rejection::internal(error),
        }
    }
}

async fn get_order(
    state: Arc<State>,
    _cx: Context,
    request: GetOrder,
) -> Result<OrderSummary, Rejection> {
    let order = domain::find(&state.outbox, request.order_id.0).await?;
    Ok(order.summary())
}

async fn list_orders(
    state: Arc<State>,
    _cx: Context,
    request: ListOrders,
) -> Result<Vec<OrderSummary>, Rejection> {
    if !(1..=100).contains(&request.limit) {
        return Err(Invalid::new("limit", "must be 1 to 100").into());
    }
    let orders = store::list_for_user(
        state.outbox.db(),
        request.user_id.0,
        i64::from(request.limit),
        0,
    )
    .await
    .map_err(Error::from)?;
    Ok(orders.iter().map(store::Order::summary).collect())
}

/// The payment went through: the order is confirmed.
async fn on_payment_completed(
    state: Arc<State>,
    delivered: Delivered<PaymentCompleted>,
) -> Result<(), HandlerError> {
    let (order_id, paid) = (delivered.order_id, delivered.amount);
    end(&state, &delivered, order_id, Outcome::Confirm { paid }).await
}

/// The payment failed: the order is cancelled with the payment's reason.
async fn on_payment_failed(
    state: Arc<State>,
    delivered: Delivered<PaymentFailed>,
) -> Result<(), HandlerError> {
    let (order_id, reason) = (delivered.order_id, delivered.reason.clone());
    end(&state, &delivered, order_id, Outcome::Cancel(reason)).await
}

/// The stock could not be held: the order is cancelled, out of stock.
async fn on_inventory_reservation_failed(
    state: Arc<State>,
    delivered: Delivered<InventoryReservationFailed>,
) -> Result<(), HandlerError> {
    let order_id = delivered.reservation_id;
    let outcome = Outcome::Cancel(OUT_OF_STOCK.to_owned());
    end(&state, &delivered, order_id, outcome).await
}

/// Applies a saga outcome to `order_id`, once. A pending order ends; one that already ended
/// is left as it is; an unknown one is logged and skipped (it cannot happen: `OrderPlaced`,
/// which starts every saga, is committed here first).
async fn end<E: Event>(
    state: &State,
    delivered: &Delivered<E>,
    order_id: Uuid,
    outcome: Outcome,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(delivered).await? else {
        return Ok(());
    };
    let ended = domain::end_saga(&mut uow, delivered.context(), order_id, outcome).await?;
    if let Ended::Applied(row) = &ended {
        // Whoever waits hears the outcome once it is durable (with group commit, after the
        // worker's batch commits), not when this handler is done.
        let (waiters, row) = (state.waiters.clone(), row.clone());
        uow.on_commit(move || waiters.wake(order_id, &row));
    }
    uow.commit().await?;
    let subject = delivered.envelope.subject.as_str();
    match ended {
        Ended::Applied(row) => {
            tracing::info!(%order_id, status = %row.status, subject, "Order saga ended.");
        }
        Ended::Already(status) => {
            tracing::debug!(%order_id, status = status.as_str(), subject, "Saga event ignored: the order already ended.");
        }
        Ended::Unknown => {
            tracing::warn!(%order_id, subject, "Saga event ignored: no such order.");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use banyan_bus::{BusError, Context};
    use banyan_orders_contract::{OrderId, UserId};
    use serde_json::json;

    use std::time::Duration;

    use axum::http::StatusCode;
    use banyan_bus::Message;
    use banyan_kit::testing::EventRecorder;
    use banyan_message::Money;
    use banyan_orders_contract::OrderCancelled;
    use banyan_payments_contract::PaymentId;

    use super::*;
    use crate::{
        harness::{self, confirm, order_id, post},
        test_support::call,
    };

    #[tokio::test]
    async fn orders_are_answered_on_the_bus_and_unknown_ones_rejected() {
        let h = harness::start().await;
        let teapot = h.product("Teapot", 1999, "EUR");
        let (alice, token) = h.users.alice.clone();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let body = json!({ "lines": [{ "product_id": teapot, "quantity": 2 }] });
            let (_, _, view) = call(
                &h.router,
                "POST",
                "/api/v1/orders",
                Some(&token),
                Some(body),
            )
            .await;
            ids.push(view["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        let cx = Context::root();
        let order =
            h.db.bus
                .request(
                    &cx,
                    GetOrder {
                        order_id: OrderId(ids[0]),
                    },
                )
                .await
                .unwrap();
        assert_eq!(order.status, "pending");
        assert_eq!(order.user_id.0, alice);
        assert_eq!(order.total.amount_minor, 3998);
        assert_eq!(order.lines[0].name, "Teapot");
        let Err(BusError::Rejected(rejection)) =
            h.db.bus
                .request(
                    &cx,
                    GetOrder {
                        order_id: OrderId::new(),
                    },
                )
                .await
        else {
            panic!("an unknown order must be rejected");
        };
        assert_eq!(rejection.code, "not_found");

        let listed =
            h.db.bus
                .request(
                    &cx,
                    ListOrders {
                        user_id: UserId(alice),
                        limit: 1,
                    },
                )
                .await
                .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].order_id.0, ids[1], "newest first");
        for limit in [0, 101] {
            let Err(BusError::Rejected(rejection)) =
                h.db.bus
                    .request(
                        &cx,
                        ListOrders {
                            user_id: UserId(alice),
                            limit,
                        },
                    )
                    .await
            else {
                panic!("limit {limit} must be rejected");
            };
            assert_eq!(rejection.code, "validation_failed");
            assert_eq!(rejection.details["field"], "limit");
        }
    }

    #[tokio::test]
    async fn an_out_of_stock_order_is_cancelled_once_however_often_the_event_comes() {
        let h = harness::start().await;
        let cancelled = EventRecorder::<OrderCancelled>::on(&h.db.bus);
        let teapot = h.product("Teapot", 1999, "EUR");
        let body = json!({ "lines": [{ "product_id": teapot, "quantity": 1 }] });
        let (_, location, view) = post(&h, "/api/v1/orders", &h.users.alice.1, body).await;
        let id = order_id(&view);
        let failed = InventoryReservationFailed {
            reservation_id: id,
            shortages: vec![],
        };
        let envelope = Context::root().envelope(InventoryReservationFailed::SUBJECT);
        h.deliver(&failed, &envelope).await;
        h.deliver(&failed, &envelope).await;
        // A second, distinct event (a late payment) finds the order ended and leaves it.
        let late = PaymentCompleted {
            payment_id: PaymentId::new(),
            order_id: id,
            amount: Money::new(1999, banyan_message::Currency::EUR),
        };
        h.deliver(&late, &Context::root().envelope(PaymentCompleted::SUBJECT))
            .await;
        // An event about an order nobody placed is skipped, not retried.
        let stray = InventoryReservationFailed {
            reservation_id: Uuid::now_v7(),
            shortages: vec![],
        };
        h.deliver(
            &stray,
            &Context::root().envelope(InventoryReservationFailed::SUBJECT),
        )
        .await;
        let (status, _, read) =
            call(&h.router, "GET", &location, Some(&h.users.alice.1), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["status"], "cancelled");
        assert_eq!(read["cancel_reason"], "out_of_stock");
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cancelled = cancelled.all();
        assert_eq!(cancelled.len(), 1, "{cancelled:?}");
        assert_eq!(cancelled[0].reason, "out_of_stock");
        assert_eq!(cancelled[0].user_id.0, h.users.alice.0);
    }

    #[tokio::test]
    async fn a_payment_of_another_amount_cancels_the_order_instead_of_confirming_it() {
        let h = harness::start().await;
        let cancelled = EventRecorder::<OrderCancelled>::on(&h.db.bus);
        let teapot = h.product("Teapot", 65_000, "EUR");
        let body = json!({ "lines": [{ "product_id": teapot, "quantity": 1 }] });
        let (_, location, view) = post(&h, "/api/v1/orders", &h.users.alice.1, body).await;
        let id = order_id(&view);
        for amount in [
            Money::new(1, banyan_message::Currency::EUR),
            Money::new(65_000, banyan_message::Currency::parse("USD").unwrap()),
        ] {
            let forged = PaymentCompleted {
                payment_id: PaymentId::new(),
                order_id: id,
                amount,
            };
            h.deliver(
                &forged,
                &Context::root().envelope(PaymentCompleted::SUBJECT),
            )
            .await;
        }
        let (_, _, read) = call(&h.router, "GET", &location, Some(&h.users.alice.1), None).await;
        assert_eq!(read["status"], "cancelled", "{read}");
        assert_eq!(read["cancel_reason"], "payment_mismatch");
        for _ in 0..50 {
            if !cancelled.all().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cancelled = cancelled.all();
        assert_eq!(cancelled.len(), 1, "{cancelled:?}");
        assert_eq!(cancelled[0].reason, "payment_mismatch");
        // The order's own total, paid later, changes nothing: it ended.
        confirm(&h, id).await;
        let (_, _, read) = call(&h.router, "GET", &location, Some(&h.users.alice.1), None).await;
        assert_eq!(read["status"], "cancelled");
    }
}
