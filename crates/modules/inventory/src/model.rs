//! The values of `inventory` and the rules on them, and the module's error.

use std::collections::BTreeMap;

use banyan_db::sqlx;
use banyan_inventory_contract::{ProductId, StockLine};
use banyan_kit::Invalid;
use uuid::Uuid;

/// What can go wrong in `inventory`. It reads as an `ApiError` at the HTTP edge and as a
/// `Rejection` on the bus.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// On hand may not go below what pending orders hold.
    #[error("{reserved} are reserved; on_hand cannot go below that")]
    BelowReserved { on_hand: i64, reserved: i64 },
    #[error("product {0} has no stock record")]
    NoStock(Uuid),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

impl Error {
    /// Whether two writers raced for one row (on PostgreSQL): worth one more try.
    pub(crate) fn is_race(&self) -> bool {
        matches!(self, Self::Storage(e) if e.as_database_error().is_some_and(|db| db.is_unique_violation()))
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
}
