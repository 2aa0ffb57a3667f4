//! The values of `cart` and the rules on them, and the module's error.

use std::collections::BTreeMap;

use banyan_bus::BusError;
use banyan_db::sqlx;
use banyan_kit::Invalid;
use banyan_orders_contract::OrderLine;
use uuid::Uuid;

/// What can go wrong in `cart`. It reads as an `ApiError` at the HTTP edge and as a
/// `Rejection` on the bus.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No account has the cart's user id.
    #[error("user {0} does not exist")]
    NoUser(uuid::Uuid),
    /// The catalog does not know the product.
    #[error("product {0} does not exist")]
    UnknownProduct(uuid::Uuid),
    /// The cart as it is now cannot take the addition: its line or the cart is full. The same
    /// request may succeed on another cart, so it is a conflict, not an invalid body.
    #[error("{field}: {reason}")]
    Limit { field: &'static str, reason: String },
    /// Catalog or users did not answer (or not in time).
    #[error(transparent)]
    Catalog(#[from] BusError),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// How many of one product a cart line holds (and how many one request may add): 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity(i64);

impl Quantity {
    pub(crate) const MAX: i64 = 1_000;

    pub(crate) fn parse(raw: i64) -> Result<Self, Invalid> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(Invalid::new("quantity", "must be 1 to 1000"));
        }
        Ok(Self(raw))
    }

    pub(crate) fn get(self) -> i64 {
        self.0
    }
}

/// The most lines one cart holds.
pub(crate) const MAX_LINES: i64 = 100;

/// What an order took out of a cart: one entry per product, its ordered quantities added up
/// (saturating), sorted by product id. Lines with no positive quantity take nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderedQuantities(Vec<(Uuid, i64)>);

impl OrderedQuantities {
    pub(crate) fn from_lines(lines: &[OrderLine]) -> Self {
        let mut merged: BTreeMap<Uuid, i64> = BTreeMap::new();
        for line in lines.iter().filter(|line| line.quantity > 0) {
            let total = merged.entry(line.product_id.0).or_default();
            *total = total.saturating_add(line.quantity);
        }
        Self(merged.into_iter().collect())
    }

    pub(crate) fn as_slice(&self) -> &[(Uuid, i64)] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use banyan_catalog_contract::ProductId;
    use banyan_message::{Currency, Money};

    use super::*;

    fn line(product_id: ProductId, quantity: i64) -> OrderLine {
        OrderLine {
            product_id,
            name: "Teapot".into(),
            unit_price: Money::new(1999, Currency::EUR),
            quantity,
        }
    }

    #[test]
    fn a_cart_line_holds_one_to_a_thousand() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(1_000).unwrap().get(), 1_000);
        for bad in [0, -1, 1_001, i64::MIN, i64::MAX] {
            let error = Quantity::parse(bad).unwrap_err();
            assert_eq!(error.field, "quantity", "{bad}");
        }
    }

    #[test]
    fn ordered_quantities_are_merged_per_product_sorted_and_never_negative() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let (low, high) = if a.0 < b.0 { (a, b) } else { (b, a) };
        let ordered = OrderedQuantities::from_lines(&[
            line(high, 2),
            line(low, 1),
            line(high, 3),
            line(low, -4),
            line(ProductId::new(), 0),
        ]);
        assert_eq!(ordered.as_slice(), &[(low.0, 1), (high.0, 5)]);
        let huge = OrderedQuantities::from_lines(&[line(a, i64::MAX), line(a, 1)]);
        assert_eq!(huge.as_slice(), &[(a.0, i64::MAX)]);
        assert!(OrderedQuantities::from_lines(&[]).as_slice().is_empty());
    }
}
