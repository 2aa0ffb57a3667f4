//! What `inventory` answers on the bus, and its part of the order saga.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use banyan_bus::{Context, Delivered, HandlerError, ModuleBus, Rejection};
use banyan_inventory_contract::{
    GetStock, ReleaseStock, Released, Reservation, ReserveStock, StockLevel, StockLine,
};
use banyan_kit::Invalid;
use banyan_orders_contract::{OrderCancelled, OrderConfirmed, OrderPlaced};
use banyan_payments_contract::PaymentFailed;
use serde_json::json;
use uuid::Uuid;

use crate::{
    State,
    domain::{self, ReserveOutcome},
    model::{Error, ReservationLines},
    store,
};

pub(crate) fn register(bus: &ModuleBus, state: &Arc<State>) {
    bus.handle(state, reserve_stock);
    bus.handle(state, release_stock);
    bus.handle(state, get_stock);
    bus.subscribe(state, on_order_placed);
    bus.subscribe(state, on_payment_failed);
    bus.subscribe(state, on_order_cancelled);
    bus.subscribe(state, on_order_confirmed);
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::BelowReserved { on_hand, reserved } => {
                Rejection::conflict("below_reserved", error.to_string())
                    .with_details(json!({ "on_hand": on_hand, "reserved": reserved }))
            }
            Error::NoStock(_) => Rejection::not_found("stock of product", error.to_string()),
            Error::Storage(error) => Rejection::internal(error),
        }
    }
}

/// Reserves the order's lines under the order id, all or none, and announces the outcome:
/// `InventoryReserved` (with a `StockChanged` per product) or `InventoryReservationFailed`
/// (nothing held). An id already used (reserved before, or its order cancelled first) changes
/// nothing and announces nothing.
async fn on_order_placed(
    state: Arc<State>,
    delivered: Delivered<OrderPlaced>,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let cx = delivered.context();
    let reservation_id = delivered.order_id.0;
    let lines: Vec<StockLine> = delivered
        .lines
        .iter()
        .map(|line| StockLine {
            product_id: line.product_id,
            quantity: line.quantity,
        })
        .collect();
    let outcome = domain::reserve_order(&mut uow, cx, reservation_id, &lines).await?;
    uow.commit().await?;
    match outcome {
        ReserveOutcome::Reserved(lines) => {
            tracing::info!(%reservation_id, lines = lines.len(), "Order stock reserved.");
        }
        ReserveOutcome::Short(shortages) => {
            tracing::info!(%reservation_id, short = shortages.len(), "Order stock short; nothing reserved.");
        }
        ReserveOutcome::AlreadyReserved(_) | ReserveOutcome::AlreadyReleased(_) => {
            tracing::debug!(%reservation_id, "Order stock reserved or released before; nothing changed.");
        }
    }
    Ok(())
}

/// The charge failed: the order's stock goes back.
async fn on_payment_failed(
    state: Arc<State>,
    delivered: Delivered<PaymentFailed>,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let reservation_id = delivered.order_id;
    let released = domain::release(&mut uow, delivered.context(), reservation_id).await?;
    uow.commit().await?;
    if released {
        tracing::info!(%reservation_id, "Reservation released: the payment failed.");
    }
    Ok(())
}

/// The order is cancelled: its stock goes back if held; if inventory has not reserved it
/// yet, it never will.
async fn on_order_cancelled(
    state: Arc<State>,
    delivered: Delivered<OrderCancelled>,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let reservation_id = delivered.order_id.0;
    let released = domain::cancel(&mut uow, delivered.context(), reservation_id).await?;
    uow.commit().await?;
    if released {
        tracing::info!(%reservation_id, "Reservation released: the order was cancelled.");
    }
    Ok(())
}

/// The order is confirmed: its reserved stock leaves the shelf.
async fn on_order_confirmed(
    state: Arc<State>,
    delivered: Delivered<OrderConfirmed>,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let reservation_id = delivered.order_id.0;
    let committed =
        domain::commit_reservation(&mut uow, delivered.context(), reservation_id).await?;
    uow.commit().await?;
    if committed {
        tracing::info!(%reservation_id, "Reservation committed: the order was confirmed.");
    } else {
        tracing::debug!(%reservation_id, "Nothing held to commit for a confirmed order.");
    }
    Ok(())
}

/// Reserves every line or rejects with `insufficient_stock`. As a request it only answers:
/// a failed reservation is not announced (the saga's event handler does that).
async fn reserve_stock(
    state: Arc<State>,
    cx: Context,
    request: ReserveStock,
) -> Result<Reservation, Rejection> {
    let lines = ReservationLines::parse(&request.lines)?;
    let reservation_id = request.reservation_id;
    // Two requests racing with one reservation id on PostgreSQL: the second trips over the
    // first's rows and, tried again, finds the reservation made.
    let mut attempts_left = 2;
    let outcome = loop {
        attempts_left -= 1;
        let mut uow = state.outbox.begin().await.map_err(Error::from)?;
        let reserved = match domain::reserve(&mut uow, &cx, reservation_id, &lines).await {
            Ok(ReserveOutcome::Reserved(lines)) => {
                uow.commit().await.map(|()| ReserveOutcome::Reserved(lines))
            }
            // Dropping the unit of work rolls back whatever it held.
            other => other,
        };
        match reserved.map_err(Error::from) {
            Ok(outcome) => break outcome,
            Err(e) if e.is_race() && attempts_left > 0 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    match outcome {
        ReserveOutcome::Reserved(lines) => {
            tracing::info!(%reservation_id, lines = lines.len(), "Stock reserved.");
            Ok(Reservation {
                reservation_id,
                lines,
            })
        }
        ReserveOutcome::AlreadyReserved(lines) => Ok(Reservation {
            reservation_id,
            lines,
        }),
        ReserveOutcome::AlreadyReleased(_) => Err(Rejection::new(
            "reservation_released",
            format!("reservation {reservation_id} was released; use a new reservation id"),
        )),
        ReserveOutcome::Short(shortages) => Err(Rejection::conflict(
            "insufficient_stock",
            format!(
                "{} of the products lack stock; nothing was reserved",
                shortages.len()
            ),
        )
        .with_details(json!({ "shortages": shortages }))),
    }
}

async fn release_stock(
    state: Arc<State>,
    cx: Context,
    request: ReleaseStock,
) -> Result<Released, Rejection> {
    let reservation_id = request.reservation_id;
    let mut uow = state.outbox.begin().await.map_err(Error::from)?;
    let released = domain::release(&mut uow, &cx, reservation_id)
        .await
        .map_err(Error::from)?;
    if released {
        uow.commit().await.map_err(Error::from)?;
        tracing::info!(%reservation_id, "Reservation released.");
    }
    Ok(Released {
        reservation_id,
        released,
    })
}

async fn get_stock(
    state: Arc<State>,
    _cx: Context,
    request: GetStock,
) -> Result<Vec<StockLevel>, Rejection> {
    if request.product_ids.len() > GetStock::MAX_IDS {
        let reason = format!("at most {} ids per request", GetStock::MAX_IDS);
        return Err(Invalid::new("product_ids", reason).into());
    }
    let unique: Vec<Uuid> = request
        .product_ids
        .iter()
        .map(|id| id.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let found: HashMap<Uuid, StockLevel> = store::find_many(state.outbox.db(), &unique)
        .await
        .map_err(Error::from)?
        .into_iter()
        .map(|row| (row.product_id(), row.level()))
        .collect();
    Ok(request
        .product_ids
        .iter()
        .map(|&product_id| {
            found.get(&product_id.0).copied().unwrap_or(StockLevel {
                product_id,
                on_hand: 0,
                reserved: 0,
                available: 0,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use banyan_bus::{Bus, BusError, Envelope, Event, Message};
    use banyan_inventory_contract::{
        InventoryReleased, InventoryReservationFailed, InventoryReserved, ProductId, Shortage,
        StockChanged,
    };
    use banyan_message::{Currency, Money};
    use banyan_orders_contract::{OrderId, OrderLine, UserId};
    use banyan_payments_contract::PaymentId;

    use super::*;
    use crate::{
        model::OnHand,
        test_support::{self, TestDb},
    };

    /// An inventory database with the module's handlers on its bus, and a subscriber that
    /// records the subjects of the events it receives.
    async fn started() -> (TestDb, Arc<State>, Arc<Mutex<Vec<String>>>) {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
        });
        register(&db.module_bus(), &state);
        let seen = Arc::new(Mutex::new(Vec::new()));
        fn record<E: Event>(bus: &Bus, seen: &Arc<Mutex<Vec<String>>>) {
            let seen = seen.clone();
            bus.subscribe::<E, _, _>("observer", move |_: Delivered<E>| {
                seen.lock().unwrap().push(E::SUBJECT.to_owned());
                async { Ok(()) }
            });
        }
        record::<StockChanged>(&db.bus, &seen);
        record::<InventoryReserved>(&db.bus, &seen);
        record::<InventoryReleased>(&db.bus, &seen);
        record::<InventoryReservationFailed>(&db.bus, &seen);
        (db, state, seen)
    }

    async fn stock(state: &State, product_id: ProductId, on_hand: i64) {
        domain::set_on_hand(
            &state.outbox,
            &Context::root(),
            product_id.0,
            OnHand::parse(on_hand).unwrap(),
        )
        .await
        .unwrap();
    }

    async fn level(db: &TestDb, product_id: ProductId) -> store::StockRow {
        store::find(db.outbox.db(), product_id.0)
            .await
            .unwrap()
            .unwrap()
    }

    async fn reserve(
        db: &TestDb,
        reservation_id: Uuid,
        lines: &[(ProductId, i64)],
    ) -> Result<Reservation, BusError> {
        let lines = lines
            .iter()
            .map(|&(product_id, quantity)| StockLine {
                product_id,
                quantity,
            })
            .collect();
        db.bus
            .request(
                &Context::root(),
                ReserveStock {
                    reservation_id,
                    lines,
                },
            )
            .await
    }

    async fn release(db: &TestDb, reservation_id: Uuid) -> Released {
        db.bus
            .request(&Context::root(), ReleaseStock { reservation_id })
            .await
            .unwrap()
    }

    /// Waits until the observer has seen `count` events (the fast path runs after commit).
    async fn seen_count(seen: &Arc<Mutex<Vec<String>>>, count: usize) -> Vec<String> {
        for _ in 0..200 {
            if seen.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_reservation_with_one_short_line_holds_nothing_and_names_the_shortage() {
        let (db, state, _) = started().await;
        let (a, b) = (ProductId::new(), ProductId::new());
        stock(&state, a, 5).await;
        stock(&state, b, 1).await;
        let Err(BusError::Rejected(rejection)) =
            reserve(&db, Uuid::now_v7(), &[(a, 3), (b, 2)]).await
        else {
            panic!("a short reservation must be rejected");
        };
        assert_eq!(rejection.code, "insufficient_stock");
        let shortages: Vec<Shortage> =
            serde_json::from_value(rejection.details["shortages"].clone()).unwrap();
        assert_eq!(
            shortages,
            vec![Shortage {
                product_id: b,
                requested: 2,
                available: 1
            }]
        );
        let a_level = level(&db, a).await;
        assert_eq!(
            (a_level.reserved, a_level.version),
            (0, 1),
            "a is untouched"
        );
        // A product never stocked is short with nothing available.
        let ghost = ProductId::new();
        let Err(BusError::Rejected(rejection)) = reserve(&db, Uuid::now_v7(), &[(ghost, 1)]).await
        else {
            panic!("an unstocked product must be rejected");
        };
        assert_eq!(rejection.details["shortages"][0]["available"], 0);
    }

    #[tokio::test]
    async fn reserving_twice_with_one_id_holds_the_stock_once_and_announces_it() {
        let (db, state, seen) = started().await;
        let p = ProductId::new();
        stock(&state, p, 10).await;
        let id = Uuid::now_v7();
        let first = reserve(&db, id, &[(p, 2), (p, 1)]).await.unwrap();
        assert_eq!(
            first.lines,
            vec![StockLine {
                product_id: p,
                quantity: 3
            }]
        );
        let again = reserve(&db, id, &[(p, 3)]).await.unwrap();
        assert_eq!(again, first);
        let row = level(&db, p).await;
        assert_eq!((row.on_hand, row.reserved, row.version), (10, 3, 2));
        let subjects = seen_count(&seen, 3).await;
        assert_eq!(
            subjects,
            vec![
                StockChanged::SUBJECT,
                InventoryReserved::SUBJECT,
                StockChanged::SUBJECT
            ]
        );
    }

    #[tokio::test]
    async fn a_release_gives_the_stock_back_once_and_the_id_cannot_be_reserved_again() {
        let (db, state, seen) = started().await;
        let p = ProductId::new();
        stock(&state, p, 4).await;
        let id = Uuid::now_v7();
        reserve(&db, id, &[(p, 4)]).await.unwrap();
        assert!(release(&db, id).await.released);
        assert!(!release(&db, id).await.released);
        assert!(!release(&db, Uuid::now_v7()).await.released);
        let row = level(&db, p).await;
        assert_eq!((row.reserved, row.version), (0, 3));
        let Err(BusError::Rejected(rejection)) = reserve(&db, id, &[(p, 1)]).await else {
            panic!("a released id must not reserve again");
        };
        assert_eq!(rejection.code, "reservation_released");
        let subjects = seen_count(&seen, 5).await;
        assert!(subjects.contains(&InventoryReleased::SUBJECT.to_owned()));
        assert_eq!(subjects.len(), 5);
    }

    #[tokio::test]
    async fn concurrent_reservations_never_take_more_than_is_on_hand() {
        let (db, state, _) = started().await;
        let p = ProductId::new();
        stock(&state, p, 10).await;
        let db = Arc::new(db);
        let tries: Vec<_> = (0..25)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { reserve(&db, Uuid::now_v7(), &[(p, 1)]).await.is_ok() })
            })
            .collect();
        let mut held = 0;
        for task in tries {
            held += usize::from(task.await.unwrap());
        }
        assert_eq!(held, 10);
        assert_eq!(level(&db, p).await.reserved, 10);
    }

    #[tokio::test]
    async fn requests_racing_with_one_reservation_id_hold_the_stock_once_and_all_succeed() {
        let (db, state, _) = started().await;
        let p = ProductId::new();
        stock(&state, p, 3).await;
        let db = Arc::new(db);
        let id = Uuid::now_v7();
        let tries: Vec<_> = (0..10)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { reserve(&db, id, &[(p, 3)]).await })
            })
            .collect();
        for task in tries {
            let reservation = task.await.unwrap().unwrap();
            assert_eq!(
                reservation.lines,
                vec![StockLine {
                    product_id: p,
                    quantity: 3
                }]
            );
        }
        let row = level(&db, p).await;
        assert_eq!((row.reserved, row.version), (3, 2));
    }

    #[tokio::test]
    async fn on_hand_cannot_go_below_what_is_reserved() {
        let (db, state, _) = started().await;
        let p = ProductId::new();
        stock(&state, p, 5).await;
        reserve(&db, Uuid::now_v7(), &[(p, 3)]).await.unwrap();
        let error = domain::set_on_hand(
            &state.outbox,
            &Context::root(),
            p.0,
            OnHand::parse(2).unwrap(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                error,
                Error::BelowReserved {
                    on_hand: 2,
                    reserved: 3
                }
            ),
            "{error:?}"
        );
        let rejection = Rejection::from(error);
        assert_eq!(rejection.code, "below_reserved");
        assert_eq!(rejection.kind, banyan_bus::RejectionKind::Conflict);
        stock(&state, p, 3).await;
        assert_eq!(level(&db, p).await.available(), 0);
    }

    #[tokio::test]
    async fn stock_levels_are_answered_in_the_order_asked_with_zeros_for_unknown_products() {
        let (db, state, _) = started().await;
        let (p, ghost) = (ProductId::new(), ProductId::new());
        stock(&state, p, 7).await;
        let levels = db
            .bus
            .request(
                &Context::root(),
                GetStock {
                    product_ids: vec![ghost, p],
                },
            )
            .await
            .unwrap();
        assert_eq!(levels[0].product_id, ghost);
        assert_eq!(levels[0].available, 0);
        assert_eq!((levels[1].on_hand, levels[1].available), (7, 7));
    }

    #[tokio::test]
    async fn bad_lines_are_rejected_as_validation_failures() {
        let (db, _, _) = started().await;
        let Err(BusError::Rejected(rejection)) =
            reserve(&db, Uuid::now_v7(), &[(ProductId::new(), 0)]).await
        else {
            panic!("a zero quantity must be rejected");
        };
        assert_eq!(rejection.code, "validation_failed");
        assert_eq!(rejection.details["field"], "lines[0].quantity");
    }

    // ------------------------------------------------------------------ the order saga

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

    fn placed(order_id: OrderId, lines: &[(ProductId, i64)]) -> OrderPlaced {
        let price = Money::new(500, Currency::EUR);
        OrderPlaced {
            order_id,
            user_id: UserId::new(),
            lines: lines
                .iter()
                .map(|&(product_id, quantity)| OrderLine {
                    product_id,
                    name: "Teapot".into(),
                    unit_price: price,
                    quantity,
                })
                .collect(),
            total: price,
            payment_method: "tok_visa".into(),
            from_cart: false,
        }
    }

    fn confirmed(order_id: OrderId) -> OrderConfirmed {
        OrderConfirmed {
            order_id,
            user_id: UserId::new(),
            total: Money::new(500, Currency::EUR),
        }
    }

    fn cancelled(order_id: OrderId) -> OrderCancelled {
        OrderCancelled {
            order_id,
            user_id: UserId::new(),
            reason: "cancelled_by_admin".into(),
        }
    }

    fn payment_failed(order_id: OrderId) -> PaymentFailed {
        PaymentFailed {
            payment_id: PaymentId::new(),
            order_id: order_id.0,
            amount: Money::new(500, Currency::EUR),
            reason: "payment_declined".into(),
        }
    }

    /// The statuses of a reservation's lines, by product id.
    async fn statuses(db: &TestDb, reservation_id: Uuid) -> Vec<String> {
        let mut conn = db.outbox.db().reader().acquire().await.unwrap();
        store::reservation(&mut conn, reservation_id)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.status)
            .collect()
    }

    fn count(subjects: &[String], subject: &str) -> usize {
        subjects.iter().filter(|s| *s == subject).count()
    }

    #[tokio::test]
    async fn a_placed_order_is_reserved_once_and_its_confirmation_takes_the_stock_off_the_shelf() {
        let (db, state, seen) = started().await;
        let (p, q) = (ProductId::new(), ProductId::new());
        stock(&state, p, 10).await;
        stock(&state, q, 5).await;
        let order = OrderId::new();
        let event = placed(order, &[(p, 2), (q, 1), (p, 1)]);
        let envelope = deliver(&db, &event, None).await;
        deliver(&db, &event, Some(&envelope)).await;
        // The same order placed again under another message id changes nothing either.
        deliver(&db, &event, None).await;
        let (p_row, q_row) = (level(&db, p).await, level(&db, q).await);
        assert_eq!((p_row.on_hand, p_row.reserved, p_row.version), (10, 3, 2));
        assert_eq!((q_row.on_hand, q_row.reserved, q_row.version), (5, 1, 2));
        let subjects = seen_count(&seen, 5).await;
        assert_eq!(count(&subjects, InventoryReserved::SUBJECT), 1);

        deliver(&db, &confirmed(order), None).await;
        deliver(&db, &confirmed(order), None).await;
        let (p_row, q_row) = (level(&db, p).await, level(&db, q).await);
        assert_eq!((p_row.on_hand, p_row.reserved, p_row.version), (7, 0, 3));
        assert_eq!((q_row.on_hand, q_row.reserved, q_row.version), (4, 0, 3));
        assert_eq!(statuses(&db, order.0).await, vec!["committed"; 2]);
        let subjects = seen_count(&seen, 7).await;
        assert_eq!(count(&subjects, StockChanged::SUBJECT), 6);

        // A committed reservation is not given back: not by a cancellation, not on request.
        deliver(&db, &cancelled(order), None).await;
        assert!(!release(&db, order.0).await.released);
        assert_eq!(level(&db, p).await.on_hand, 7);
        assert_eq!(statuses(&db, order.0).await, vec!["committed"; 2]);
    }

    #[tokio::test]
    async fn a_placed_order_with_too_little_stock_is_announced_as_failed_and_holds_nothing() {
        let (db, state, seen) = started().await;
        let (p, q) = (ProductId::new(), ProductId::new());
        stock(&state, p, 1).await;
        stock(&state, q, 5).await;
        let order = OrderId::new();
        deliver(&db, &placed(order, &[(q, 2), (p, 2)]), None).await;
        let q_row = level(&db, q).await;
        assert_eq!((q_row.reserved, q_row.version), (0, 1), "q is untouched");
        assert!(statuses(&db, order.0).await.is_empty());
        // One line alone, short too.
        deliver(&db, &placed(OrderId::new(), &[(p, 3)]), None).await;
        assert_eq!(level(&db, p).await.version, 1);
        let subjects = seen_count(&seen, 4).await;
        assert_eq!(count(&subjects, InventoryReservationFailed::SUBJECT), 2);
        assert_eq!(count(&subjects, InventoryReserved::SUBJECT), 0);
        // What was announced: the short product, with what it had.
        let Err(BusError::Rejected(rejection)) = reserve(&db, Uuid::now_v7(), &[(p, 2)]).await
        else {
            panic!("still short");
        };
        let shortages: Vec<Shortage> =
            serde_json::from_value(rejection.details["shortages"].clone()).unwrap();
        assert_eq!(shortages[0].available, 1);
    }

    #[tokio::test]
    async fn order_lines_that_cannot_make_a_reservation_are_announced_as_failed() {
        let (db, state, seen) = started().await;
        let p = ProductId::new();
        stock(&state, p, 100_000).await;
        let too_many: Vec<(ProductId, i64)> = (0..11).map(|_| (p, 1_000)).collect();
        deliver(&db, &placed(OrderId::new(), &too_many), None).await;
        assert_eq!(level(&db, p).await.reserved, 0);
        let subjects = seen_count(&seen, 2).await;
        assert_eq!(count(&subjects, InventoryReservationFailed::SUBJECT), 1);
    }

    #[tokio::test]
    async fn a_failed_payment_gives_the_order_stock_back_once() {
        let (db, state, seen) = started().await;
        let p = ProductId::new();
        stock(&state, p, 4).await;
        let order = OrderId::new();
        deliver(&db, &placed(order, &[(p, 4)]), None).await;
        assert_eq!(level(&db, p).await.available(), 0);
        deliver(&db, &payment_failed(order), None).await;
        deliver(&db, &payment_failed(order), None).await;
        // The order is cancelled next: nothing more to give back.
        deliver(&db, &cancelled(order), None).await;
        let row = level(&db, p).await;
        assert_eq!((row.on_hand, row.reserved, row.version), (4, 0, 3));
        assert_eq!(statuses(&db, order.0).await, vec!["released"]);
        // Confirming a released reservation takes nothing.
        deliver(&db, &confirmed(order), None).await;
        assert_eq!(level(&db, p).await.on_hand, 4);
        let subjects = seen_count(&seen, 5).await;
        assert_eq!(count(&subjects, InventoryReleased::SUBJECT), 1);
        assert_eq!(subjects.len(), 5);
    }

    #[tokio::test]
    async fn an_order_cancelled_before_inventory_saw_it_placed_never_holds_stock() {
        let (db, state, seen) = started().await;
        let p = ProductId::new();
        stock(&state, p, 4).await;
        let order = OrderId::new();
        deliver(&db, &cancelled(order), None).await;
        deliver(&db, &placed(order, &[(p, 1)]), None).await;
        let row = level(&db, p).await;
        assert_eq!((row.reserved, row.version), (0, 1));
        let subjects = seen_count(&seen, 1).await;
        assert_eq!(subjects, vec![StockChanged::SUBJECT]);
    }
}
