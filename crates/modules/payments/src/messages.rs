//! What `payments` answers on the bus, and its part of the order saga.

use std::sync::Arc;

use banyan_bus::{Context, Delivered, HandlerError, ModuleBus, Rejection};
use banyan_inventory_contract::InventoryReserved;
use banyan_message::Money;
use banyan_orders_contract::OrderPlaced;
use banyan_payments_contract::{GetPayment, PaymentId, PaymentView};

use crate::{
    State,
    domain::{self, Held},
    model::{Error, Intent},
    store::PaymentRow,
};

pub(crate) fn register(bus: &ModuleBus, state: &Arc<State>) {
    bus.handle(state, get_payment);
    bus.subscribe(state, on_order_placed);
    bus.subscribe(state, on_inventory_reserved);
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        match error {
            Error::NoPayment(order_id) => Rejection::not_found("payment of order", order_id),
            Error::Storage(error) => Rejection::internal(error),
            Error::Corrupt(cause) => Rejection::internal(cause),
        }
    }
}

/// The payment of an order, rejected with `not_found` when it has none (yet).
async fn get_payment(
    state: Arc<State>,
    _cx: Context,
    request: GetPayment,
) -> Result<PaymentView, Rejection> {
    let (row, currency) = domain::payment_of(&state.outbox, request.order_id).await?;
    Ok(PaymentView {
        payment_id: PaymentId(row.id()),
        order_id: row.order_id(),
        user_id: row.user_id(),
        amount: Money::new(row.amount_minor, currency),
        status: row.status,
        failure_reason: row.failure_reason,
        created_at_ms: row.created_at,
    })
}

/// Records what the order asks to be charged. If its stock was held already (its
/// `InventoryReserved` overtook this event), charges it now.
async fn on_order_placed(
    state: Arc<State>,
    delivered: Delivered<OrderPlaced>,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let intent = Intent::from(&*delivered.event);
    let charged =
        domain::order_placed(&mut uow, delivered.context(), &state.provider, &intent).await?;
    uow.commit().await?;
    if let Some(payment) = charged {
        log_charge(&payment);
    }
    Ok(())
}

/// The order's stock is held: charge it, once. If its `OrderPlaced` has not been handled yet
/// (a redelivery can overtake), note it: the order is charged when its intent is recorded.
async fn on_inventory_reserved(
    state: Arc<State>,
    delivered: Delivered<InventoryReserved>,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let order_id = delivered.reservation_id;
    let held = domain::stock_held(&mut uow, delivered.context(), &state.provider, order_id).await?;
    uow.commit().await?;
    match held {
        Held::Charged(Some(payment)) => log_charge(&payment),
        Held::Charged(None) => tracing::debug!(%order_id, "Order charged before; nothing changed."),
        Held::Early => {
            tracing::debug!(%order_id, "Stock held before the order was seen placed; charging it when it is.");
        }
    }
    Ok(())
}

fn log_charge(payment: &PaymentRow) {
    match &payment.failure_reason {
        None => {
            tracing::debug!(order_id = %payment.order_id, amount_minor = payment.amount_minor, "Payment completed.")
        }
        Some(reason) => {
            tracing::info!(order_id = %payment.order_id, amount_minor = payment.amount_minor, %reason, "Payment failed.")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use banyan_bus::{BusError, Envelope, Event, Message};
    use banyan_inventory_contract::{ProductId, StockLine};
    use banyan_message::Currency;
    use banyan_orders_contract::{OrderId, OrderLine, UserId};
    use banyan_payments_contract::{PaymentCompleted, PaymentFailed};
    use uuid::Uuid;

    use super::*;
    use crate::{
        model::Provider,
        test_support::{self, TestDb},
    };

    /// What the observer saw: `(subject, order id, reason)`.
    type Seen = Arc<Mutex<Vec<(String, Uuid, Option<String>)>>>;

    /// A payments database with the module's handlers on its bus (the provider declines
    /// `tok_declined` and charges at most 10 000), and a subscriber that records the payment
    /// events.
    async fn started() -> (TestDb, Seen) {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            provider: Provider::new(vec!["tok_declined".into()], 10_000, 0.0).unwrap(),
        });
        register(&db.module_bus(), &state);
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let completed = seen.clone();
        db.bus
            .subscribe::<PaymentCompleted, _, _>("observer", move |d: Delivered<_>| {
                let entry = (PaymentCompleted::SUBJECT.to_owned(), d.order_id, None);
                completed.lock().unwrap().push(entry);
                async { Ok(()) }
            });
        let failed = seen.clone();
        db.bus
            .subscribe::<PaymentFailed, _, _>("observer", move |d: Delivered<_>| {
                let entry = (
                    PaymentFailed::SUBJECT.to_owned(),
                    d.order_id,
                    Some(d.reason.clone()),
                );
                failed.lock().unwrap().push(entry);
                async { Ok(()) }
            });
        (db, seen)
    }

    /// Delivers `event` as the bus would and waits until it is handled: with a fresh message
    /// id, or with `again`'s (a redelivery).
    async fn deliver<E: Event>(db: &TestDb, event: &E, again: Option<&Envelope>) -> Envelope {
        let envelope = again
            .cloned()
            .unwrap_or_else(|| Context::root().envelope(E::SUBJECT));
        let json = serde_json::to_string(event).unwrap();
        db.bus
            .inbound("nats")
            .deliver_remote_event(envelope.clone(), json.into(), event.aggregate_id())
            .await
            .unwrap();
        envelope
    }

    fn placed(order_id: OrderId, total_minor: i64, payment_method: &str) -> OrderPlaced {
        let total = Money::new(total_minor, Currency::EUR);
        OrderPlaced {
            order_id,
            user_id: UserId::new(),
            lines: vec![OrderLine {
                product_id: ProductId::new(),
                name: "Teapot".into(),
                unit_price: total,
                quantity: 1,
            }],
            total,
            payment_method: payment_method.into(),
            from_cart: false,
        }
    }

    fn reserved(order_id: OrderId) -> InventoryReserved {
        InventoryReserved {
            reservation_id: order_id.0,
            lines: vec![StockLine {
                product_id: ProductId::new(),
                quantity: 1,
            }],
        }
    }

    async fn payment(db: &TestDb, order_id: OrderId) -> Result<PaymentView, BusError> {
        db.bus
            .request(
                &Context::root(),
                GetPayment {
                    order_id: order_id.0,
                },
            )
            .await
    }

    /// Waits until the observer has seen `count` events (the fast path runs after commit).
    async fn seen_count(seen: &Seen, count: usize) -> Vec<(String, Uuid, Option<String>)> {
        for _ in 0..200 {
            if seen.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn an_order_is_charged_once_when_its_stock_is_held() {
        let (db, seen) = started().await;
        let order = OrderId::new();
        let placed = placed(order, 2_500, "tok_visa");
        deliver(&db, &placed, None).await;
        let Err(BusError::Rejected(rejection)) = payment(&db, order).await else {
            panic!("no payment before the stock is held");
        };
        assert_eq!(rejection.code, "not_found");
        let envelope = deliver(&db, &reserved(order), None).await;
        deliver(&db, &reserved(order), Some(&envelope)).await;
        deliver(&db, &reserved(order), None).await;
        let view = payment(&db, order).await.unwrap();
        assert_eq!(view.order_id, order.0);
        assert_eq!(view.user_id, placed.user_id.0);
        assert_eq!(view.amount, Money::new(2_500, Currency::EUR));
        assert_eq!(
            (view.status.as_str(), view.failure_reason),
            ("completed", None)
        );
        let events = seen_count(&seen, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            events,
            vec![(PaymentCompleted::SUBJECT.to_owned(), order.0, None)]
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "one charge, one event");
    }

    #[tokio::test]
    async fn a_declined_method_and_an_amount_over_the_limit_fail_with_their_reasons() {
        let (db, seen) = started().await;
        let (declined, over) = (OrderId::new(), OrderId::new());
        deliver(&db, &placed(declined, 100, "tok_declined"), None).await;
        deliver(&db, &placed(over, 10_001, "tok_visa"), None).await;
        deliver(&db, &reserved(declined), None).await;
        deliver(&db, &reserved(over), None).await;
        let view = payment(&db, declined).await.unwrap();
        assert_eq!(
            (view.status.as_str(), view.failure_reason.as_deref()),
            ("failed", Some("payment_declined"))
        );
        let view = payment(&db, over).await.unwrap();
        assert_eq!(view.failure_reason.as_deref(), Some("payment_over_limit"));
        let mut events = seen_count(&seen, 2).await;
        events.sort_by_key(|(_, _, reason)| reason.clone());
        assert_eq!(
            events,
            vec![
                (
                    PaymentFailed::SUBJECT.to_owned(),
                    declined.0,
                    Some("payment_declined".to_owned())
                ),
                (
                    PaymentFailed::SUBJECT.to_owned(),
                    over.0,
                    Some("payment_over_limit".to_owned())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn stock_held_before_the_order_was_seen_placed_is_charged_when_it_is() {
        let (db, seen) = started().await;
        let order = OrderId::new();
        deliver(&db, &reserved(order), None).await;
        assert!(payment(&db, order).await.is_err());
        let placed = placed(order, 700, "tok_visa");
        let envelope = deliver(&db, &placed, None).await;
        deliver(&db, &placed, Some(&envelope)).await;
        assert_eq!(payment(&db, order).await.unwrap().status, "completed");
        // Neither the note nor a redelivery charges it twice.
        deliver(&db, &reserved(order), None).await;
        let events = seen_count(&seen, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(events.len(), 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_deliveries_of_held_stock_charge_an_order_once() {
        let (db, seen) = started().await;
        let db = Arc::new(db);
        let order = OrderId::new();
        deliver(&db, &placed(order, 300, "tok_visa"), None).await;
        let tries: Vec<_> = (0..10)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { deliver(&db, &reserved(order), None).await })
            })
            .collect();
        for task in tries {
            task.await.unwrap();
        }
        assert_eq!(payment(&db, order).await.unwrap().status, "completed");
        seen_count(&seen, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
