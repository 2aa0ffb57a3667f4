//! Orders and the rules on their values.
//!
//! Placing an order is two steps, so that no write transaction is ever held across a bus
//! request: [`prepare`] validates what the client asked for, reads the cart and the catalog
//! and prices the lines; [`place`] then writes the order and announces it in one unit of work.
//! [`end_saga`] is what the saga's event handlers apply, inside their own unit of work.

use std::collections::HashMap;

use axum::http::StatusCode;
use banyan_bus::{Bus, BusError, Context, Outbox, Rejection, UnitOfWork};
use banyan_cart_contract::GetCart;
use banyan_catalog_contract::{GetProducts, ProductSnapshot};
use banyan_db::{now_millis, sqlx};
use banyan_kit::ApiError;
use banyan_message::{Currency, Money};
use banyan_orders_contract::{
    OrderCancelled, OrderConfirmed, OrderId, OrderLine, OrderPlaced, ProductId, UserId,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::store::{self, LineRow, Order, OrderRow};

/// Where an order is in its life. The saga moves it from `Pending` to `Confirmed` or
/// `Cancelled`; an admin moves a confirmed order on to `Shipped`, then `Delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Confirmed,
    Cancelled,
    Shipped,
    Delivered,
}

impl Status {
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "confirmed" => Some(Self::Confirmed),
            "cancelled" => Some(Self::Cancelled),
            "shipped" => Some(Self::Shipped),
            "delivered" => Some(Self::Delivered),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
        }
    }

    /// Whether an admin may move an order from `self` to `to`: confirmed → shipped →
    /// delivered, one step at a time, and nothing else.
    pub(crate) fn may_become(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Self::Confirmed, Self::Shipped) | (Self::Shipped, Self::Delivered)
        )
    }
}

/// What pays an order: a token of the simulated provider, 1 to 64 characters of
/// `a-z 0-9 _`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaymentMethod(String);

impl PaymentMethod {
    /// The method used when a client names none.
    pub(crate) const DEFAULT: &'static str = "tok_visa";

    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        if !(1..=64).contains(&raw.len()) {
            return Err(ApiError::invalid(
                "payment_method",
                "must be 1 to 64 characters",
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ApiError::invalid(
                "payment_method",
                "may hold only lower-case letters, digits and '_'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many of a product a line orders: 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity(i64);

impl Quantity {
    pub(crate) const MAX: i64 = 1_000;

    pub(crate) fn parse(raw: i64, field: &str) -> Result<Self, ApiError> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(ApiError::invalid(field, "must be 1 to 1000"));
        }
        Ok(Self(raw))
    }

    pub(crate) fn get(self) -> i64 {
        self.0
    }
}

/// The lines of an order as asked for: 1 to 100, each quantity 1 to 1000; lines of one product
/// merged into the first (their sum still at most 1000), in the order first given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestedLines(Vec<(ProductId, Quantity)>);

impl RequestedLines {
    pub(crate) const MAX_LINES: usize = 100;

    /// `field` names where the lines came from (`lines`, or `cart`) in error messages.
    pub(crate) fn parse(
        field: &str,
        lines: impl ExactSizeIterator<Item = (ProductId, i64)>,
    ) -> Result<Self, ApiError> {
        if !(1..=Self::MAX_LINES).contains(&lines.len()) {
            return Err(ApiError::invalid(field, "must hold 1 to 100 lines"));
        }
        let mut merged: Vec<(ProductId, i64)> = Vec::with_capacity(lines.len());
        for (i, (product_id, quantity)) in lines.enumerate() {
            let quantity = Quantity::parse(quantity, &format!("{field}[{i}].quantity"))?;
            match merged.iter_mut().find(|(id, _)| *id == product_id) {
                Some((_, total)) => *total += quantity.get(),
                None => merged.push((product_id, quantity.get())),
            }
        }
        merged
            .into_iter()
            .map(|(product_id, total)| {
                Quantity::parse(total, field)
                    .map(|quantity| (product_id, quantity))
                    .map_err(|_| {
                        ApiError::invalid(
                            field,
                            format!(
                                "the quantities of product {product_id} add up to more than 1000"
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (ProductId, Quantity)> + '_ {
        self.0.iter().copied()
    }

    pub(crate) fn product_ids(&self) -> Vec<ProductId> {
        self.0.iter().map(|(id, _)| *id).collect()
    }
}

/// The lines with the catalog's names and prices as they are now, and their total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Priced {
    pub(crate) lines: Vec<OrderLine>,
    pub(crate) total: Money,
}

/// Snapshots each line's name and unit price from `products`. Every line must be priced in
/// one currency, and the total must fit: both are checked, never assumed.
pub(crate) fn price(
    field: &str,
    lines: &RequestedLines,
    products: &[ProductSnapshot],
) -> Result<Priced, ApiError> {
    let by_id: HashMap<ProductId, &ProductSnapshot> =
        products.iter().map(|p| (p.product_id, p)).collect();
    let missing: Vec<String> = lines
        .iter()
        .filter(|(id, _)| !by_id.contains_key(id))
        .map(|(id, _)| id.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(unknown_products(field, missing));
    }
    let too_large = || ApiError::invalid(field, "the order's total is too large");
    let mut currency: Option<Currency> = None;
    let mut total: i64 = 0;
    let mut priced = Vec::with_capacity(lines.iter().len());
    for (product_id, quantity) in lines.iter() {
        let Some(product) = by_id.get(&product_id) else {
            continue;
        };
        let price = product.price;
        match currency {
            None => currency = Some(price.currency),
            Some(first) if first != price.currency => {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "the products are priced in different currencies ({first} and {}); \
                         order them separately",
                        price.currency
                    ),
                ));
            }
            Some(_) => {}
        }
        let line_total = price.times(quantity.get()).ok_or_else(too_large)?;
        total = total
            .checked_add(line_total.amount_minor)
            .ok_or_else(too_large)?;
        priced.push(OrderLine {
            product_id,
            name: product.name.clone(),
            unit_price: price,
            quantity: quantity.get(),
        });
    }
    let currency = currency.ok_or_else(|| ApiError::invalid(field, "must hold 1 to 100 lines"))?;
    Ok(Priced {
        lines: priced,
        total: Money::new(total, currency),
    })
}

/// A 422 naming the products the catalog does not know.
fn unknown_products(field: &str, ids: Vec<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        format!("{field}: unknown product(s): {}", ids.join(", ")),
    )
    .with_details(json!({
        "field": field,
        "reason": "unknown_product",
        "product_ids": ids,
    }))
}

/// How a failed catalog lookup reads over HTTP: an unknown product is the client's mistake
/// (a 422 that names it); anything else as the kit maps it.
fn catalog_error(field: &str, error: BusError) -> ApiError {
    match error {
        BusError::Rejected(rejection) if rejection.is("unknown_product") => {
            let ids = rejected_ids(&rejection);
            if ids.is_empty() {
                return ApiError::invalid(field, rejection.message);
            }
            unknown_products(field, ids)
        }
        other => other.into(),
    }
}

fn rejected_ids(rejection: &Rejection) -> Vec<String> {
    rejection
        .details
        .get("product_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An order as a client asks for it: either `lines` or `from_cart: true`. Nothing else: the
/// price, total, status and owner are not the client's to set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaceOrder {
    /// 1 to 100 lines; lines of one product are merged. Not with `from_cart: true`.
    pub(crate) lines: Option<Vec<LineRequest>>,
    /// Order what the caller's cart holds (which is then cleared of it).
    pub(crate) from_cart: Option<bool>,
    /// A token of the simulated provider, 1 to 64 characters of `a-z 0-9 _`; `tok_visa` by
    /// default, `tok_declined` is declined.
    pub(crate) payment_method: Option<String>,
}

/// A product and how many of it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineRequest {
    pub(crate) product_id: Uuid,
    /// 1 to 1000.
    pub(crate) quantity: i64,
}

/// An order ready to be written: validated and priced, with its id chosen.
#[derive(Debug, Clone)]
pub(crate) struct NewOrder {
    pub(crate) id: OrderId,
    pub(crate) user_id: UserId,
    pub(crate) priced: Priced,
    pub(crate) payment_method: PaymentMethod,
    pub(crate) from_cart: bool,
}

/// Validates an order for `user_id`, reads their cart if it is made from it, and prices it
/// from the catalog. Writes nothing.
pub(crate) async fn prepare(
    bus: &Bus,
    cx: &Context,
    user_id: Uuid,
    request: PlaceOrder,
) -> Result<NewOrder, ApiError> {
    let payment_method = PaymentMethod::parse(
        request
            .payment_method
            .as_deref()
            .unwrap_or(PaymentMethod::DEFAULT),
    )?;
    let from_cart = request.from_cart.unwrap_or(false);
    let (field, lines) = match (request.lines, from_cart) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "from_cart",
                "give either lines or from_cart: true, not both",
            ));
        }
        (None, false) => {
            return Err(ApiError::invalid(
                "lines",
                "give the lines to order, or from_cart: true to order the cart",
            ));
        }
        (Some(lines), false) => (
            "lines",
            RequestedLines::parse(
                "lines",
                lines
                    .iter()
                    .map(|line| (ProductId(line.product_id), line.quantity)),
            )?,
        ),
        (None, true) => {
            let cart = bus
                .request(
                    cx,
                    GetCart {
                        user_id: UserId(user_id),
                    },
                )
                .await?;
            if cart.lines.is_empty() {
                return Err(ApiError::invalid("from_cart", "the cart is empty"));
            }
            (
                "cart",
                RequestedLines::parse(
                    "cart",
                    cart.lines
                        .iter()
                        .map(|line| (line.product_id, line.quantity)),
                )?,
            )
        }
    };
    let products = bus
        .request(
            cx,
            GetProducts {
                product_ids: lines.product_ids(),
            },
        )
        .await
        .map_err(|e| catalog_error(field, e))?;
    let priced = price(field, &lines, &products)?;
    Ok(NewOrder {
        id: OrderId::new(),
        user_id: UserId(user_id),
        priced,
        payment_method,
        from_cart,
    })
}

/// Writes a prepared order (`pending`) and announces it with `OrderPlaced`, in one unit of
/// work: three statements and the commit.
pub(crate) async fn place(
    outbox: &Outbox,
    cx: &Context,
    order: NewOrder,
) -> Result<Order, ApiError> {
    let now = now_millis();
    let total = order.priced.total;
    let row = OrderRow {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: Status::Pending.as_str().to_owned(),
        cancel_reason: None,
        total_minor: total.amount_minor,
        currency: total.currency.to_string(),
        payment_method: order.payment_method.as_str().to_owned(),
        from_cart: i64::from(order.from_cart),
        created_at: now,
        updated_at: now,
    };
    let lines: Vec<LineRow> = order
        .priced
        .lines
        .iter()
        .zip(1..)
        .map(|(line, line_no)| LineRow::new(&row.id, line_no, line))
        .collect();
    let mut uow = outbox.begin().await?;
    store::insert(&mut uow, &row, &lines).await?;
    uow.emit(
        cx,
        OrderPlaced {
            order_id: order.id,
            user_id: order.user_id,
            lines: order.priced.lines,
            total,
            payment_method: row.payment_method.clone(),
            from_cart: order.from_cart,
        },
    )
    .await?;
    uow.commit().await?;
    tracing::debug!(order_id = %order.id, user_id = %order.user_id, "Order placed.");
    Ok(Order { row, lines })
}

/// How the saga ends an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Paid, with its stock held.
    Confirm,
    /// Not to be: `reason` says why (`out_of_stock`, `payment_declined`, ...).
    Cancel(String),
}

/// What [`end_saga`] did.
#[derive(Debug, Clone)]
pub(crate) enum Ended {
    /// The order was pending and now has the outcome (this row); its event is in the unit of
    /// work.
    Applied(OrderRow),
    /// The order had already left `pending` (it has this status): nothing changed.
    Already(Status),
    /// No such order: nothing changed.
    Unknown,
}

/// Applies the saga's outcome to a pending order and emits `OrderConfirmed` or
/// `OrderCancelled` in the caller's unit of work. Only a pending order changes, so applying
/// an outcome twice (or a late one) does nothing. The caller commits.
pub(crate) async fn end_saga(
    uow: &mut UnitOfWork,
    cx: &Context,
    order_id: Uuid,
    outcome: Outcome,
) -> Result<Ended, sqlx::Error> {
    let (status, reason) = match &outcome {
        Outcome::Confirm => (Status::Confirmed, None),
        Outcome::Cancel(reason) => (Status::Cancelled, Some(reason.as_str())),
    };
    let Some(ended) = store::end_pending(uow, order_id, status, reason).await? else {
        return Ok(match store::status_in(uow, order_id).await? {
            Some(current) => Ended::Already(Status::parse(&current).unwrap_or(Status::Pending)),
            None => Ended::Unknown,
        });
    };
    let (order_id, user_id) = (OrderId(order_id), UserId(ended.user_id()));
    match outcome {
        Outcome::Confirm => {
            let total = ended.total();
            uow.emit(
                cx,
                OrderConfirmed {
                    order_id,
                    user_id,
                    total,
                },
            )
            .await?;
        }
        Outcome::Cancel(reason) => {
            uow.emit(
                cx,
                OrderCancelled {
                    order_id,
                    user_id,
                    reason,
                },
            )
            .await?;
        }
    }
    Ok(Ended::Applied(ended))
}

/// Moves an order on (an admin's doing): confirmed → shipped → delivered. 404 for an unknown
/// order, 409 `invalid_transition` for any other move.
pub(crate) async fn change_status(
    outbox: &Outbox,
    order_id: Uuid,
    to: Status,
) -> Result<(), ApiError> {
    let mut uow = outbox.begin().await?;
    let current = store::status_in(&mut uow, order_id)
        .await?
        .ok_or_else(|| order_not_found(order_id))?;
    let from = Status::parse(&current).unwrap_or(Status::Pending);
    let invalid = || {
        ApiError::conflict(
            "invalid_transition",
            format!(
                "an order that is {} cannot become {}",
                from.as_str(),
                to.as_str()
            ),
        )
        .with_details(json!({ "from": from.as_str(), "to": to.as_str() }))
    };
    if !from.may_become(to) {
        return Err(invalid());
    }
    if !store::move_status(&mut uow, order_id, from, to).await? {
        return Err(invalid());
    }
    uow.commit().await?;
    tracing::info!(%order_id, from = from.as_str(), to = to.as_str(), "Order status changed.");
    Ok(())
}

pub(crate) fn order_not_found(order_id: Uuid) -> ApiError {
    ApiError::not_found(format!("order {order_id} does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(raw: &[(ProductId, i64)]) -> Result<RequestedLines, ApiError> {
        RequestedLines::parse("lines", raw.iter().copied())
    }

    fn product(id: ProductId, amount_minor: i64, currency: &str) -> ProductSnapshot {
        ProductSnapshot {
            product_id: id,
            sku: "SKU".into(),
            name: format!("product {amount_minor}"),
            category: "kitchen".into(),
            price: Money::new(amount_minor, Currency::parse(currency).unwrap()),
        }
    }

    #[test]
    fn lines_of_one_product_are_merged_into_the_first_in_the_order_given() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let merged = lines(&[(b, 2), (a, 1), (b, 3)]).unwrap();
        let got: Vec<(ProductId, i64)> = merged.iter().map(|(id, q)| (id, q.get())).collect();
        assert_eq!(got, vec![(b, 5), (a, 1)]);
        assert_eq!(merged.product_ids(), vec![b, a]);
    }

    #[test]
    fn a_quantity_is_one_to_a_thousand_before_and_after_merging() {
        let p = ProductId::new();
        assert!(lines(&[(p, 1)]).is_ok());
        assert!(lines(&[(p, 1000)]).is_ok());
        for bad in [0, -1, 1001, i64::MIN, i64::MAX] {
            let error = lines(&[(p, bad)]).unwrap_err();
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(error.details.unwrap()["field"], "lines[0].quantity");
        }
        assert!(lines(&[(p, 600), (p, 400)]).is_ok());
        let error = lines(&[(p, 600), (p, 401)]).unwrap_err();
        assert!(error.message.contains(&p.to_string()), "{}", error.message);
        assert!(lines(&[(p, 20), (p, -5)]).is_err());
    }

    #[test]
    fn an_order_has_one_to_a_hundred_lines() {
        assert!(lines(&[]).is_err());
        let many: Vec<(ProductId, i64)> = (0..101).map(|_| (ProductId::new(), 1)).collect();
        assert!(lines(&many).is_err());
        assert!(lines(&many[..100]).is_ok());
    }

    #[test]
    fn a_payment_method_is_one_to_sixty_four_lower_case_letters_digits_or_underscores() {
        assert_eq!(
            PaymentMethod::parse("tok_visa").unwrap().as_str(),
            "tok_visa"
        );
        assert!(PaymentMethod::parse("tok_chargeDeclined").is_err());
        assert!(PaymentMethod::parse(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "tok visa",
            "tok-visa",
            "tok_visa\n",
            "tök",
            &"a".repeat(65),
        ] {
            let error = PaymentMethod::parse(bad).unwrap_err();
            assert_eq!(error.details.unwrap()["field"], "payment_method", "{bad}");
        }
    }

    #[test]
    fn prices_are_snapshotted_and_totalled_per_line() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let asked = lines(&[(a, 2), (b, 1), (a, 1)]).unwrap();
        let priced = price(
            "lines",
            &asked,
            &[product(a, 1999, "EUR"), product(b, 500, "EUR")],
        )
        .unwrap();
        assert_eq!(priced.total, Money::new(3 * 1999 + 500, Currency::EUR));
        assert_eq!(priced.lines.len(), 2);
        assert_eq!(priced.lines[0].quantity, 3);
        assert_eq!(priced.lines[0].name, "product 1999");
        assert_eq!(priced.lines[1].unit_price, Money::new(500, Currency::EUR));
    }

    #[test]
    fn lines_priced_in_different_currencies_are_refused() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let asked = lines(&[(a, 1), (b, 1)]).unwrap();
        let error = price(
            "lines",
            &asked,
            &[product(a, 100, "EUR"), product(b, 100, "USD")],
        )
        .unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.message.contains("currencies"), "{}", error.message);
    }

    #[test]
    fn a_total_that_would_overflow_is_refused_not_wrapped() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let one = lines(&[(a, 2)]).unwrap();
        let error = price("lines", &one, &[product(a, i64::MAX / 2 + 1, "EUR")]).unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        let two = lines(&[(a, 1), (b, 1)]).unwrap();
        let error = price(
            "lines",
            &two,
            &[product(a, i64::MAX, "EUR"), product(b, 1, "EUR")],
        )
        .unwrap_err();
        assert!(error.message.contains("too large"), "{}", error.message);
    }

    #[test]
    fn an_unknown_product_is_a_validation_failure_that_names_it() {
        let ghost = ProductId::new();
        let rejection = Rejection::new("unknown_product", "unknown product ids")
            .with_details(json!({ "product_ids": [ghost] }));
        let error = catalog_error("lines", BusError::Rejected(rejection));
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.message.contains(&ghost.to_string()));
        assert_eq!(error.details.unwrap()["product_ids"][0], ghost.to_string());
        // A product missing from the catalog's answer is named too.
        let asked = lines(&[(ghost, 1)]).unwrap();
        let error = price("lines", &asked, &[]).unwrap_err();
        assert!(error.message.contains(&ghost.to_string()));
    }

    #[test]
    fn only_confirmed_to_shipped_to_delivered_are_allowed_moves() {
        use Status::*;
        let all = [Pending, Confirmed, Cancelled, Shipped, Delivered];
        for from in all {
            assert_eq!(Status::parse(from.as_str()), Some(from));
            for to in all {
                let allowed = matches!((from, to), (Confirmed, Shipped) | (Shipped, Delivered));
                assert_eq!(from.may_become(to), allowed, "{from:?} -> {to:?}");
            }
        }
        assert_eq!(Status::parse("lost"), None);
    }
}
