//! What `inventory` answers on the bus.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use banyan_bus::{Bus, Context, Rejection};
use banyan_db::sqlx;
use banyan_inventory_contract::{
    GetStock, ReleaseStock, Released, Reservation, ReserveStock, StockLevel,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    State,
    domain::{self, ReservationLines, ReserveOutcome},
    store,
};

pub(crate) fn register(bus: &Bus, state: &Arc<State>) {
    let reserve_state = state.clone();
    bus.handle::<ReserveStock, _, _>("inventory", move |cx, request| {
        let state = reserve_state.clone();
        async move { reserve_stock(&state, &cx, request).await }
    });
    let release_state = state.clone();
    bus.handle::<ReleaseStock, _, _>("inventory", move |cx, request| {
        let state = release_state.clone();
        async move { release_stock(&state, &cx, request).await }
    });
    let stock_state = state.clone();
    bus.handle::<GetStock, _, _>("inventory", move |_cx, request| {
        let state = stock_state.clone();
        async move { get_stock(&state, request).await }
    });
}

fn internal(error: sqlx::Error) -> Rejection {
    Rejection::new("internal", error.to_string())
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// Reserves every line or rejects with `insufficient_stock`. As a request it only answers:
/// a failed reservation is not announced (the saga's event handler does that).
async fn reserve_stock(
    state: &State,
    cx: &Context,
    request: ReserveStock,
) -> Result<Reservation, Rejection> {
    let lines = ReservationLines::parse(&request.lines)?;
    let reservation_id = request.reservation_id;
    // Two requests racing with one reservation id on PostgreSQL: the second trips over the
    // first's rows and, tried again, finds the reservation made.
    let mut attempts_left = 2;
    let outcome = loop {
        attempts_left -= 1;
        let mut uow = state.outbox.begin().await.map_err(internal)?;
        match domain::reserve(&mut uow, cx, reservation_id, &lines).await {
            Ok(ReserveOutcome::Reserved(lines)) => match uow.commit().await {
                Ok(()) => break ReserveOutcome::Reserved(lines),
                Err(e) if is_unique_violation(&e) && attempts_left > 0 => continue,
                Err(e) => return Err(internal(e)),
            },
            // Dropping the unit of work rolls back whatever it held.
            Ok(other) => break other,
            Err(e) if is_unique_violation(&e) && attempts_left > 0 => continue,
            Err(e) => return Err(internal(e)),
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
        ReserveOutcome::Short(shortages) => Err(Rejection::new(
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
    state: &State,
    cx: &Context,
    request: ReleaseStock,
) -> Result<Released, Rejection> {
    let reservation_id = request.reservation_id;
    let mut uow = state.outbox.begin().await.map_err(internal)?;
    let released = domain::release(&mut uow, cx, reservation_id)
        .await
        .map_err(internal)?;
    if released {
        uow.commit().await.map_err(internal)?;
        tracing::info!(%reservation_id, "Reservation released.");
    }
    Ok(Released {
        reservation_id,
        released,
    })
}

async fn get_stock(state: &State, request: GetStock) -> Result<Vec<StockLevel>, Rejection> {
    if request.product_ids.len() > GetStock::MAX_IDS {
        let reason = format!("at most {} ids per request", GetStock::MAX_IDS);
        return Err(
            Rejection::new("validation_failed", format!("product_ids: {reason}"))
                .with_details(json!({ "field": "product_ids", "reason": reason })),
        );
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
        .map_err(internal)?
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

    use banyan_bus::{BusError, Delivered, Event, Message};
    use banyan_inventory_contract::{
        InventoryReleased, InventoryReserved, ProductId, Shortage, StockChanged, StockLine,
    };

    use super::*;
    use crate::{
        domain::OnHand,
        test_support::{self, TestDb},
    };

    /// An inventory database with the module's handlers on its bus, and a subscriber that
    /// records the subjects of the events it receives.
    async fn started() -> (TestDb, Arc<State>, Arc<Mutex<Vec<String>>>) {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
        });
        register(&db.bus, &state);
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
        assert_eq!(error.code, "below_reserved");
        assert_eq!(error.status, axum::http::StatusCode::CONFLICT);
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
}
