//! What `orders` answers on the bus, and the saga events it listens to.
//!
//! Each saga handler records the event in the inbox, ends the order only if it is still
//! pending, and emits the order's event, all in one unit of work; after the commit it wakes
//! whoever waits for the order.

use std::sync::Arc;

use banyan_bus::{Bus, Delivered, Event, HandlerError, Rejection};
use banyan_inventory_contract::InventoryReservationFailed;
use banyan_orders_contract::{GetOrder, ListOrders, OrderSummary};
use banyan_payments_contract::{PaymentCompleted, PaymentFailed};
use serde_json::json;
use uuid::Uuid;

use crate::{
    State,
    domain::{self, Ended, Outcome},
    store,
};

/// The module's name: its subscription group, so its dead letters land in its own database.
const MODULE: &str = "orders";

/// The cancel reason of an order whose stock could not be reserved.
const OUT_OF_STOCK: &str = "out_of_stock";

pub(crate) fn register(bus: &Bus, state: &Arc<State>) {
    let get_state = state.clone();
    bus.handle::<GetOrder, _, _>(MODULE, move |_cx, request| {
        let state = get_state.clone();
        async move { get_order(&state, request).await }
    });
    let list_state = state.clone();
    bus.handle::<ListOrders, _, _>(MODULE, move |_cx, request| {
        let state = list_state.clone();
        async move { list_orders(&state, request).await }
    });
    let paid_state = state.clone();
    bus.subscribe::<PaymentCompleted, _, _>(MODULE, move |delivered| {
        let state = paid_state.clone();
        async move {
            let order_id = delivered.order_id;
            end(&state, &delivered, order_id, Outcome::Confirm).await
        }
    });
    let declined_state = state.clone();
    bus.subscribe::<PaymentFailed, _, _>(MODULE, move |delivered| {
        let state = declined_state.clone();
        async move {
            let (order_id, reason) = (delivered.order_id, delivered.reason.clone());
            end(&state, &delivered, order_id, Outcome::Cancel(reason)).await
        }
    });
    let short_state = state.clone();
    bus.subscribe::<InventoryReservationFailed, _, _>(MODULE, move |delivered| {
        let state = short_state.clone();
        async move {
            let order_id = delivered.reservation_id;
            let outcome = Outcome::Cancel(OUT_OF_STOCK.to_owned());
            end(&state, &delivered, order_id, outcome).await
        }
    });
}

fn internal(error: banyan_db::sqlx::Error) -> Rejection {
    Rejection::new("internal", error.to_string())
}

async fn get_order(state: &State, request: GetOrder) -> Result<OrderSummary, Rejection> {
    let order_id = request.order_id;
    store::find(state.outbox.db(), order_id.0)
        .await
        .map_err(internal)?
        .map(|order| order.summary())
        .ok_or_else(|| Rejection::not_found("order", order_id))
}

async fn list_orders(state: &State, request: ListOrders) -> Result<Vec<OrderSummary>, Rejection> {
    if !(1..=100).contains(&request.limit) {
        let reason = "must be 1 to 100";
        return Err(
            Rejection::new("validation_failed", format!("limit: {reason}"))
                .with_details(json!({ "field": "limit", "reason": reason })),
        );
    }
    let orders = store::list_for_user(
        state.outbox.db(),
        request.user_id.0,
        i64::from(request.limit),
        0,
    )
    .await
    .map_err(internal)?;
    Ok(orders.iter().map(store::Order::summary).collect())
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
    uow.commit().await?;
    let subject = delivered.envelope.subject.as_str();
    match ended {
        Ended::Applied(row) => {
            tracing::info!(%order_id, status = %row.status, subject, "Order saga ended.");
            state.waiters.wake(order_id, &row);
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

    use super::*;
    use crate::{harness, test_support::call};

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
}
