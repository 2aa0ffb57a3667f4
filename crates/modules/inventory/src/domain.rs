//! Stock, reservations and the rules on their values.
//!
//! [`reserve`], [`release`], [`cancel`] and [`commit_reservation`] work inside a caller's
//! [`UnitOfWork`], so that a request handler and an event handler of the order saga can both
//! use them: the event handler records its inbox entry in the same transaction. The caller
//! commits.

use std::collections::BTreeMap;

use banyan_bus::{Context, Outbox, UnitOfWork};
use banyan_db::sqlx::{self, AnyConnection, Connection};
use banyan_inventory_contract::{
    InventoryReleased, InventoryReservationFailed, InventoryReserved, ProductId, Shortage,
    StockLine,
};
use uuid::Uuid;

use crate::{
    model::{Error, OnHand, ReservationLines},
    store::{self, StockRow},
};

/// What [`reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReserveOutcome {
    /// Every line is now held; `InventoryReserved` and the `StockChanged`s are emitted in the
    /// unit of work, to be committed by the caller.
    Reserved(Vec<StockLine>),
    /// A reservation with this id is already held: these are its lines. Nothing was changed.
    AlreadyReserved(Vec<StockLine>),
    /// A reservation with this id was made and released before. Nothing was changed.
    AlreadyReleased(Vec<StockLine>),
    /// Some lines had too little stock. Nothing is held and nothing was emitted: the unit of
    /// work is as it was before the call.
    Short(Vec<Shortage>),
}

/// The saga's step: reserves an order's lines under `reservation_id`, all or none, and emits
/// every outcome in the unit of work: `InventoryReserved` with a `StockChanged` per product,
/// or `InventoryReservationFailed` (nothing held; also for lines that could never be
/// reserved). An id used before changes nothing and emits nothing.
pub(crate) async fn reserve_order(
    uow: &mut UnitOfWork,
    cx: &Context,
    reservation_id: Uuid,
    lines: &[StockLine],
) -> Result<ReserveOutcome, sqlx::Error> {
    let outcome = match ReservationLines::parse(lines) {
        Ok(valid) => reserve(uow, cx, reservation_id, &valid).await?,
        Err(invalid) => {
            tracing::warn!(%reservation_id, field = %invalid.field, reason = %invalid.reason, "Order lines cannot be reserved; announcing the reservation as failed.");
            ReserveOutcome::Short(unreservable(uow, lines).await?)
        }
    };
    if let ReserveOutcome::Short(shortages) = &outcome {
        let failed = InventoryReservationFailed {
            reservation_id,
            shortages: shortages.clone(),
        };
        uow.emit(cx, failed).await?;
    }
    Ok(outcome)
}

/// Holds every line of a reservation, or none. See [`ReserveOutcome`] for what the unit of
/// work holds afterwards.
pub(crate) async fn reserve(
    uow: &mut UnitOfWork,
    cx: &Context,
    reservation_id: Uuid,
    lines: &ReservationLines,
) -> Result<ReserveOutcome, sqlx::Error> {
    if let Some(outcome) = existing(uow, reservation_id).await? {
        return Ok(outcome);
    }
    let (taken, shortages) = if lines.len() == 1 {
        // One line: a take that fails changes nothing, so there is nothing to undo.
        hold(uow, reservation_id, lines).await?
    } else {
        // A savepoint: if any line is short, every line taken so far is given back without
        // abandoning the caller's unit of work (which may hold its inbox entry).
        let mut attempt = Connection::begin(&mut **uow).await?;
        let held = hold(&mut attempt, reservation_id, lines).await?;
        if held.1.is_empty() {
            attempt.commit().await?;
        } else {
            attempt.rollback().await?;
        }
        held
    };
    if !shortages.is_empty() {
        // On PostgreSQL a request racing with this one under the same id may have taken the
        // stock meanwhile: then this reservation is made, not short.
        if let Some(outcome) = existing(uow, reservation_id).await? {
            return Ok(outcome);
        }
        return Ok(ReserveOutcome::Short(shortages));
    }
    let reserved = lines.to_stock_lines();
    uow.emit(
        cx,
        InventoryReserved {
            reservation_id,
            lines: reserved.clone(),
        },
    )
    .await?;
    for row in &taken {
        uow.emit(cx, row.changed()).await?;
    }
    Ok(ReserveOutcome::Reserved(reserved))
}

/// Takes every line and, if all were available, records the reservation's lines. Answers the
/// rows taken and the shortages; when there are shortages the caller must undo what was taken
/// (nothing was, for a single line).
async fn hold(
    conn: &mut AnyConnection,
    reservation_id: Uuid,
    lines: &ReservationLines,
) -> Result<(Vec<StockRow>, Vec<Shortage>), sqlx::Error> {
    let mut taken: Vec<StockRow> = Vec::with_capacity(lines.len());
    let mut shortages: Vec<Shortage> = Vec::new();
    for (product_id, quantity) in lines.iter() {
        match store::take(conn, product_id.0, quantity.get()).await? {
            Some(row) => taken.push(row),
            None => shortages.push(Shortage {
                product_id,
                requested: quantity.get(),
                available: store::available(conn, product_id.0).await?,
            }),
        }
    }
    if shortages.is_empty() {
        store::insert_reservation_lines(conn, reservation_id, &lines.to_stock_lines()).await?;
    }
    Ok((taken, shortages))
}

/// The shortages that announce lines which cannot make a reservation at all (more than
/// [`Quantity::MAX`](crate::model::Quantity::MAX) of one product, no lines, too many): each product asked for, with what
/// it has available. Changes nothing.
async fn unreservable(
    conn: &mut AnyConnection,
    lines: &[StockLine],
) -> Result<Vec<Shortage>, sqlx::Error> {
    let mut merged: BTreeMap<ProductId, i64> = BTreeMap::new();
    for line in lines {
        let total = merged.entry(line.product_id).or_default();
        *total = total.saturating_add(line.quantity);
    }
    let mut shortages = Vec::with_capacity(merged.len());
    for (product_id, requested) in merged {
        shortages.push(Shortage {
            product_id,
            requested,
            available: store::available(conn, product_id.0).await?,
        });
    }
    Ok(shortages)
}

/// What an existing reservation under `reservation_id` amounts to, if there is one. A
/// committed reservation counts as held: its stock is gone with its order.
async fn existing(
    uow: &mut UnitOfWork,
    reservation_id: Uuid,
) -> Result<Option<ReserveOutcome>, sqlx::Error> {
    let rows = store::reservation(uow, reservation_id).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let released = rows.iter().any(|row| row.status == store::RELEASED);
    let lines: Vec<StockLine> = rows.iter().map(store::ReservationRow::line).collect();
    Ok(Some(if released {
        ReserveOutcome::AlreadyReleased(lines)
    } else {
        ReserveOutcome::AlreadyReserved(lines)
    }))
}

/// Gives a held reservation's stock back and announces it. `false` if nothing was held under
/// that id (unknown, or released before): then nothing changes.
pub(crate) async fn release(
    uow: &mut UnitOfWork,
    cx: &Context,
    reservation_id: Uuid,
) -> Result<bool, sqlx::Error> {
    // Marking the lines released first takes their row locks, so two releases racing on
    // PostgreSQL give the stock back once.
    let mut lines = store::end_held(uow, reservation_id, store::RELEASED).await?;
    if lines.is_empty() {
        return Ok(false);
    }
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    let mut changed = Vec::with_capacity(lines.len());
    for line in &lines {
        let line = line.line();
        if let Some(row) = store::give_back(uow, line.product_id.0, line.quantity).await? {
            changed.push(row.changed());
        }
    }
    uow.emit(cx, InventoryReleased { reservation_id }).await?;
    for event in changed {
        uow.emit(cx, event).await?;
    }
    Ok(true)
}

/// Gives a held reservation back for good: as [`release`], and if nothing was ever reserved
/// under the id (its order was cancelled before inventory saw it placed), marks the id so
/// that a later [`reserve`] under it holds nothing. `false` if nothing was held.
pub(crate) async fn cancel(
    uow: &mut UnitOfWork,
    cx: &Context,
    reservation_id: Uuid,
) -> Result<bool, sqlx::Error> {
    if release(uow, cx, reservation_id).await? {
        return Ok(true);
    }
    store::insert_tombstone(uow, reservation_id).await?;
    Ok(false)
}

/// The order of a held reservation is confirmed: its stock leaves the shelf, taken off both
/// `on_hand` and `reserved` of each product, and the reservation is `committed`. `false` if
/// nothing was held under that id (unknown, released, or committed before): then nothing
/// changes.
pub(crate) async fn commit_reservation(
    uow: &mut UnitOfWork,
    cx: &Context,
    reservation_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let mut lines = store::end_held(uow, reservation_id, store::COMMITTED).await?;
    if lines.is_empty() {
        return Ok(false);
    }
    // One lock order everywhere (see `ReservationLines`).
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    for line in &lines {
        let line = line.line();
        if let Some(row) = store::take_off_hand(uow, line.product_id.0, line.quantity).await? {
            uow.emit(cx, row.changed()).await?;
        }
    }
    Ok(true)
}

/// Sets what is on hand of a product, creating its stock if missing, and announces it. Never
/// below what is reserved: that is a 409 `below_reserved`.
pub(crate) async fn set_on_hand(
    outbox: &Outbox,
    cx: &Context,
    product_id: Uuid,
    on_hand: OnHand,
) -> Result<StockRow, Error> {
    let mut uow = outbox.begin().await?;
    let Some(row) = store::set_on_hand(&mut uow, product_id, on_hand.get()).await? else {
        let reserved = store::find_in(&mut uow, product_id)
            .await?
            .map_or(0, |row| row.reserved);
        return Err(Error::BelowReserved {
            on_hand: on_hand.get(),
            reserved,
        });
    };
    uow.emit(cx, row.changed()).await?;
    uow.commit().await?;
    tracing::info!(product_id = %product_id, on_hand = row.on_hand, reserved = row.reserved, "Stock set.");
    Ok(row)
}

/// The stock of `product_id`.
pub(crate) async fn find(outbox: &Outbox, product_id: Uuid) -> Result<StockRow, Error> {
    store::find(outbox.db(), product_id)
        .await?
        .ok_or(Error::NoStock(product_id))
}
