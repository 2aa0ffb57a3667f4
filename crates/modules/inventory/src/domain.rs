//! Stock, reservations and the rules on their values.
//!
//! [`reserve`], [`release`], [`cancel`] and [`commit_reservation`] work inside a caller's
//! [`UnitOfWork`], so that a request handler and an event handler of the order saga can both
//! use them: the event handler records its inbox entry in the same transaction. The caller
//! commits.

use std::collections::BTreeMap;

use banyan_bus::{Context, Outbox, Rejection, UnitOfWork};
use banyan_db::sqlx::{self, AnyConnection, Connection};
use banyan_inventory_contract::{
    InventoryReleased, InventoryReserved, ProductId, Shortage, StockLine,
};
use banyan_kit::ApiError;
use serde_json::json;
use uuid::Uuid;

use crate::store::{self, StockRow};

/// A value that failed validation: which field, and why. It reads as a 422 over HTTP and as a
/// `validation_failed` rejection on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) field: String,
    pub(crate) reason: String,
}

impl Invalid {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::invalid(&invalid.field, invalid.reason)
    }
}

impl From<Invalid> for Rejection {
    fn from(invalid: Invalid) -> Self {
        Rejection::new(
            "validation_failed",
            format!("{}: {}", invalid.field, invalid.reason),
        )
        .with_details(json!({ "field": invalid.field, "reason": invalid.reason }))
    }
}

/// The count of a product on hand: 0 to 10^9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OnHand(i64);

impl OnHand {
    pub(crate) const MAX: i64 = 1_000_000_000;

    pub(crate) fn parse(raw: i64) -> Result<Self, Invalid> {
        if !(0..=Self::MAX).contains(&raw) {
            return Err(Invalid::new("on_hand", "must be 0 to 1000000000"));
        }
        Ok(Self(raw))
    }

    pub(crate) fn get(self) -> i64 {
        self.0
    }
}

/// What one reservation line may ask for: 1 to 10 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity(i64);

impl Quantity {
    pub(crate) const MAX: i64 = 10_000;

    pub(crate) fn parse(raw: i64, field: &str) -> Result<Self, Invalid> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(Invalid::new(field, "must be 1 to 10000"));
        }
        Ok(Self(raw))
    }

    pub(crate) fn get(self) -> i64 {
        self.0
    }
}

/// The lines of a reservation: 1 to 100 as given, then one per product (quantities of a
/// repeated product added up, still at most 10 000), sorted by product id. Taking row locks in
/// one order everywhere is what keeps concurrent reservations from deadlocking on PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReservationLines(Vec<(ProductId, Quantity)>);

impl ReservationLines {
    pub(crate) const MAX_LINES: usize = 100;

    pub(crate) fn parse(lines: &[StockLine]) -> Result<Self, Invalid> {
        if !(1..=Self::MAX_LINES).contains(&lines.len()) {
            return Err(Invalid::new("lines", "must hold 1 to 100 lines"));
        }
        let mut merged: BTreeMap<ProductId, i64> = BTreeMap::new();
        for (i, line) in lines.iter().enumerate() {
            let quantity = Quantity::parse(line.quantity, &format!("lines[{i}].quantity"))?;
            *merged.entry(line.product_id).or_default() += quantity.get();
        }
        merged
            .into_iter()
            .map(|(product_id, total)| {
                let field = format!("lines (product {product_id})");
                Quantity::parse(total, &field)
                    .map(|quantity| (product_id, quantity))
                    .map_err(|_| Invalid::new(field, "adds up to more than 10000"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// How many products the reservation holds (never 0).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ProductId, Quantity)> + '_ {
        self.0.iter().copied()
    }

    pub(crate) fn to_stock_lines(&self) -> Vec<StockLine> {
        self.iter()
            .map(|(product_id, quantity)| StockLine {
                product_id,
                quantity: quantity.get(),
            })
            .collect()
    }
}

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
/// [`Quantity::MAX`] of one product, no lines, too many): each product asked for, with what
/// it has available. Changes nothing.
pub(crate) async fn unreservable(
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
) -> Result<StockRow, ApiError> {
    let mut uow = outbox.begin().await?;
    let Some(row) = store::set_on_hand(&mut uow, product_id, on_hand.get()).await? else {
        let reserved = store::find_in(&mut uow, product_id)
            .await?
            .map_or(0, |row| row.reserved);
        return Err(ApiError::conflict(
            "below_reserved",
            format!("{reserved} are reserved; on_hand cannot go below that"),
        )
        .with_details(json!({ "on_hand": on_hand.get(), "reserved": reserved })));
    };
    uow.emit(cx, row.changed()).await?;
    uow.commit().await?;
    tracing::info!(product_id = %product_id, on_hand = row.on_hand, reserved = row.reserved, "Stock set.");
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: ProductId, quantity: i64) -> StockLine {
        StockLine {
            product_id,
            quantity,
        }
    }

    #[test]
    fn on_hand_is_between_zero_and_a_billion() {
        assert_eq!(OnHand::parse(0).unwrap().get(), 0);
        assert!(OnHand::parse(OnHand::MAX).is_ok());
        assert!(OnHand::parse(OnHand::MAX + 1).is_err());
        assert!(OnHand::parse(-1).is_err());
    }

    #[test]
    fn a_line_asks_for_one_to_ten_thousand() {
        assert!(Quantity::parse(1, "q").is_ok());
        assert!(Quantity::parse(10_000, "q").is_ok());
        for bad in [0, -1, 10_001, i64::MIN, i64::MAX] {
            assert!(Quantity::parse(bad, "q").is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_of_one_product_are_merged_and_all_lines_sorted_by_product_id() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        let lines = ReservationLines::parse(&[line(high, 2), line(low, 1), line(high, 3)]).unwrap();
        assert_eq!(lines.to_stock_lines(), vec![line(low, 1), line(high, 5)]);
        // The order of ids is the order of their text, as the database compares them.
        assert!(low.to_string() < high.to_string());
    }

    #[test]
    fn a_reservation_has_one_to_a_hundred_lines_of_valid_quantities() {
        assert!(ReservationLines::parse(&[]).is_err());
        let many: Vec<StockLine> = (0..101).map(|_| line(ProductId::new(), 1)).collect();
        assert!(ReservationLines::parse(&many).is_err());
        assert!(ReservationLines::parse(&many[..100]).is_ok());
        let error =
            ReservationLines::parse(&[line(ProductId::new(), 1), line(ProductId::new(), 0)])
                .unwrap_err();
        assert_eq!(error.field, "lines[1].quantity");
    }

    #[test]
    fn merged_lines_may_not_exceed_ten_thousand_nor_hide_a_negative_quantity() {
        let p = ProductId::new();
        assert!(ReservationLines::parse(&[line(p, 6_000), line(p, 5_000)]).is_err());
        assert!(ReservationLines::parse(&[line(p, 20), line(p, -5)]).is_err());
    }

    #[test]
    fn an_invalid_value_reads_as_a_validation_rejection_with_its_field() {
        let rejection = Rejection::from(Invalid::new("on_hand", "must be 0 to 1000000000"));
        assert_eq!(rejection.code, "validation_failed");
        assert_eq!(rejection.details["field"], "on_hand");
    }
}
