//! Carts and the rules on their values.

use std::collections::BTreeMap;

use banyan_bus::{Bus, BusError, Context, Outbox, UnitOfWork};
use banyan_catalog_contract::{GetProducts, ProductId};
use banyan_db::sqlx;
use banyan_kit::ApiError;
use banyan_orders_contract::OrderLine;
use uuid::Uuid;

use crate::store;

/// How many of one product a cart line holds (and how many one request may add): 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity(i64);

impl Quantity {
    pub(crate) const MAX: i64 = 1_000;

    pub(crate) fn parse(raw: i64) -> Result<Self, ApiError> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(ApiError::invalid("quantity", "must be 1 to 1000"));
        }
        Ok(Self(raw))
    }

    pub(crate) fn get(self) -> i64 {
        self.0
    }
}

/// The most lines one cart holds.
pub(crate) const MAX_LINES: i64 = 100;

/// Adds `quantity` of a product to a user's cart, creating the line if missing. The product
/// must be in the catalog; the line may not go beyond [`Quantity::MAX`], nor the cart beyond
/// [`MAX_LINES`] lines (422 either way, and nothing changes).
pub(crate) async fn add_item(
    outbox: &Outbox,
    bus: &Bus,
    cx: &Context,
    user_id: Uuid,
    product_id: Uuid,
    quantity: Quantity,
) -> Result<(), ApiError> {
    // Asked before the transaction, so that no write lock is held while catalog answers.
    let asked = GetProducts {
        product_ids: vec![ProductId(product_id)],
    };
    match bus.request(cx, asked).await {
        Ok(_) => {}
        Err(BusError::Rejected(rejection)) if rejection.is("unknown_product") => {
            return Err(ApiError::invalid(
                "product_id",
                format!("product {product_id} does not exist"),
            ));
        }
        Err(other) => return Err(other.into()),
    }
    let mut uow = outbox.begin().await?;
    let added = store::add(
        &mut uow,
        user_id,
        product_id,
        quantity.get(),
        Quantity::MAX,
        MAX_LINES,
    )
    .await?;
    if added.is_none() {
        // Which limit was hit: the line's, if it exists; the cart's otherwise.
        let held = store::line_quantity(&mut uow, user_id, product_id).await?;
        return Err(match held {
            Some(held) => ApiError::invalid(
                "quantity",
                format!(
                    "the line holds {held}; adding {} would go beyond {}",
                    quantity.get(),
                    Quantity::MAX
                ),
            ),
            None => ApiError::invalid("lines", format!("a cart holds at most {MAX_LINES} lines")),
        });
    }
    uow.commit().await?;
    Ok(())
}

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

/// Takes what an order made from the cart ordered out of it, inside the caller's unit of work:
/// each line loses the ordered quantity, and lines reaching zero (or less) are removed.
/// Products not in the cart are passed over. Answers how many lines were removed.
pub(crate) async fn take_ordered(
    uow: &mut UnitOfWork,
    user_id: Uuid,
    ordered: &OrderedQuantities,
) -> Result<usize, sqlx::Error> {
    let ordered = ordered.as_slice();
    if ordered.is_empty() {
        return Ok(0);
    }
    let removed = store::remove_used_up(uow, user_id, ordered).await?;
    if removed.len() < ordered.len() {
        let rest: Vec<(Uuid, i64)> = ordered
            .iter()
            .filter(|(product_id, _)| !removed.contains(product_id))
            .copied()
            .collect();
        store::subtract(uow, user_id, &rest).await?;
    }
    Ok(removed.len())
}

#[cfg(test)]
mod tests {
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
            assert_eq!(error.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(error.details.unwrap()["field"], "quantity", "{bad}");
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
