//! The values of `orders` and the rules on them (lines, prices, the life of an order), and
//! the module's error.

use std::collections::HashMap;

use banyan_bus::{BusError, Rejection};
use banyan_catalog_contract::ProductSnapshot;
use banyan_db::sqlx;
use banyan_kit::Invalid;
use banyan_message::{Currency, Money};
use banyan_orders_contract::{OrderId, OrderLine, ProductId, UserId};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// What can go wrong in `orders`. It reads as an `ApiError` at the HTTP edge and as a
/// `Rejection` on the bus.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Lines name products the catalog does not know (`field` says where the lines came from).
    #[error("{field}: unknown product(s): {}", ids.join(", "))]
    UnknownProducts { field: String, ids: Vec<String> },
    #[error("order {0} does not exist")]
    NotFound(Uuid),
    /// `from_cart` on a cart with nothing in it: the same request succeeds once it holds
    /// something, so it is a conflict with the cart as it is, not an invalid body.
    #[error("from_cart: the cart is empty")]
    EmptyCart,
    /// An admin's move the life of an order does not allow.
    #[error("an order that is {} cannot become {}", from.as_str(), to.as_str())]
    InvalidTransition { from: Status, to: Status },
    /// Cart or catalog did not answer (or not in time).
    #[error(transparent)]
    Peer(#[from] BusError),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

impl Error {
    /// How a failed catalog lookup reads: an unknown product is the client's mistake (naming
    /// it); anything else is the catalog's trouble.
    pub(crate) fn from_catalog(field: &str, error: BusError) -> Self {
        match error {
            BusError::Rejected(rejection) if rejection.is("unknown_product") => {
                let ids = rejected_ids(&rejection);
                if ids.is_empty() {
                    return Invalid::new(field, rejection.message).into();
                }
                Self::UnknownProducts {
                    field: field.to_owned(),
                    ids,
                }
            }
            other => other.into(),
        }
    }
}

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

    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        if !(1..=64).contains(&raw.len()) {
            return Err(Invalid::new("payment_method", "must be 1 to 64 characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Invalid::new(
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

    pub(crate) fn parse(raw: i64, field: &str) -> Result<Self, Invalid> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(Invalid::new(field, "must be 1 to 1000"));
        }
        Ok(Self(raw))
    }

    pub(crate) fn get(self) -> i64 {
        self.0
    }
}

/// The lines of an order as asked for: 1 to 100, each quantity 1 to 1000; lines of one product
/// merged into the first, in the order first given. A merged quantity is their sum (at most
/// 100 × 1000): each line as given obeys the document's rule, which cannot speak of sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestedLines(Vec<(ProductId, i64)>);

impl RequestedLines {
    pub(crate) const MAX_LINES: usize = 100;

    /// `field` names where the lines came from (`lines`, or `cart`) in error messages.
    pub(crate) fn parse(
        field: &str,
        lines: impl ExactSizeIterator<Item = (ProductId, i64)>,
    ) -> Result<Self, Invalid> {
        if !(1..=Self::MAX_LINES).contains(&lines.len()) {
            return Err(Invalid::new(field, "must hold 1 to 100 lines"));
        }
        let mut merged: Vec<(ProductId, i64)> = Vec::with_capacity(lines.len());
        for (i, (product_id, quantity)) in lines.enumerate() {
            let quantity = Quantity::parse(quantity, &format!("{field}[{i}].quantity"))?;
            match merged.iter_mut().find(|(id, _)| *id == product_id) {
                Some((_, total)) => *total += quantity.get(),
                None => merged.push((product_id, quantity.get())),
            }
        }
        Ok(Self(merged))
    }

    /// Each product once, with its merged quantity.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (ProductId, i64)> + '_ {
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
) -> Result<Priced, Error> {
    let by_id: HashMap<ProductId, &ProductSnapshot> =
        products.iter().map(|p| (p.product_id, p)).collect();
    let missing: Vec<String> = lines
        .iter()
        .filter(|(id, _)| !by_id.contains_key(id))
        .map(|(id, _)| id.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::UnknownProducts {
            field: field.to_owned(),
            ids: missing,
        });
    }
    let too_large = || Invalid::new(field, "the order's total is too large");
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
                return Err(Invalid::new(
                    field,
                    format!(
                        "the products are priced in different currencies ({first} and {}); \
                         order them separately",
                        price.currency
                    ),
                )
                .into());
            }
            Some(_) => {}
        }
        let line_total = price.times(quantity).ok_or_else(too_large)?;
        total = total
            .checked_add(line_total.amount_minor)
            .ok_or_else(too_large)?;
        priced.push(OrderLine {
            product_id,
            name: product.name.clone(),
            unit_price: price,
            quantity,
        });
    }
    let currency = currency.ok_or_else(|| Invalid::new(field, "must hold 1 to 100 lines"))?;
    Ok(Priced {
        lines: priced,
        total: Money::new(total, currency),
    })
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
/// price, total, status and owner are not the client's to set. A field may be left out but
/// not sent as null. [`PlaceOrderBody`] is its schema.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaceOrder {
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    pub(crate) lines: Option<Vec<LineRequest>>,
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    pub(crate) from_cart: Option<bool>,
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    pub(crate) payment_method: Option<String>,
}

/// The schema of [`PlaceOrder`], written out: one of two shapes, lines or the cart, which a
/// derive cannot state. A fuzzer drawing from it then draws only orders a shop could take.
pub(crate) struct PlaceOrderBody;

impl utoipa::PartialSchema for PlaceOrderBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let payment_method = serde_json::json!({
            "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9_]{1,64}$",
            "description": "A token of the simulated provider, 1 to 64 characters of \
                `a-z 0-9 _`; `tok_visa` by default, `tok_declined` is declined.",
        });
        let shapes = serde_json::json!({
            "description": "An order: either `lines`, or `from_cart: true` to order what the \
                caller's cart holds (which is then cleared of it). The price, total, status \
                and owner are not the client's to set. A field may be left out, not sent as null.",
            "oneOf": [
                {
                    "title": "Lines",
                    "type": "object",
                    "required": ["lines"],
                    "additionalProperties": false,
                    "properties": {
                        "lines": {
                            "type": "array", "minItems": 1, "maxItems": 100,
                            "items": { "$ref": "#/components/schemas/LineRequest" },
                            "description": "1 to 100 lines; lines of one product are merged.",
                        },
                        "from_cart": { "type": "boolean", "enum": [false] },
                        "payment_method": payment_method,
                    },
                },
                {
                    "title": "FromCart",
                    "type": "object",
                    "required": ["from_cart"],
                    "additionalProperties": false,
                    "properties": {
                        "from_cart": { "type": "boolean", "enum": [true] },
                        "payment_method": payment_method,
                    },
                },
            ],
        });
        // A literal, checked by the document's tests: it always parses.
        serde_json::from_value(shapes).unwrap_or_default()
    }
}

impl utoipa::ToSchema for PlaceOrderBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "PlaceOrder".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((LineRequest::name().into(), LineRequest::schema()));
    }
}

/// A product and how many of it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineRequest {
    pub(crate) product_id: Uuid,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(raw: &[(ProductId, i64)]) -> Result<RequestedLines, Invalid> {
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
        let got: Vec<(ProductId, i64)> = merged.iter().collect();
        assert_eq!(got, vec![(b, 5), (a, 1)]);
        assert_eq!(merged.product_ids(), vec![b, a]);
    }

    #[test]
    fn a_line_s_quantity_is_one_to_a_thousand_and_merged_lines_add_up() {
        let p = ProductId::new();
        assert!(lines(&[(p, 1)]).is_ok());
        assert!(lines(&[(p, 1000)]).is_ok());
        for bad in [0, -1, 1001, i64::MIN, i64::MAX] {
            let error = lines(&[(p, bad)]).unwrap_err();
            assert_eq!(error.field, "lines[0].quantity", "{bad}");
        }
        let merged = lines(&[(p, 600), (p, 1000)]).unwrap();
        assert_eq!(merged.iter().collect::<Vec<_>>(), vec![(p, 1600)]);
        assert!(lines(&[(p, 20), (p, -5)]).is_err());
    }

    #[test]
    fn the_documented_order_is_one_of_two_shapes() {
        let schema = serde_json::to_value(<PlaceOrderBody as utoipa::PartialSchema>::schema());
        let schema = schema.unwrap();
        let titles: Vec<&Value> = schema["oneOf"]
            .as_array()
            .map(|shapes| shapes.iter().map(|shape| &shape["title"]).collect())
            .unwrap_or_default();
        assert_eq!(titles, ["Lines", "FromCart"], "{schema}");
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
            assert_eq!(error.field, "payment_method", "{bad}");
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
        assert!(matches!(error, Error::Invalid(_)), "{error:?}");
        assert!(error.to_string().contains("currencies"), "{error}");
    }

    #[test]
    fn a_total_that_would_overflow_is_refused_not_wrapped() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let one = lines(&[(a, 2)]).unwrap();
        let error = price("lines", &one, &[product(a, i64::MAX / 2 + 1, "EUR")]).unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error:?}");
        let two = lines(&[(a, 1), (b, 1)]).unwrap();
        let error = price(
            "lines",
            &two,
            &[product(a, i64::MAX, "EUR"), product(b, 1, "EUR")],
        )
        .unwrap_err();
        assert!(error.to_string().contains("too large"), "{error}");
    }

    #[test]
    fn an_unknown_product_is_a_validation_failure_that_names_it() {
        let ghost = ProductId::new();
        let rejection = Rejection::new("unknown_product", "unknown product ids")
            .with_details(serde_json::json!({ "product_ids": [ghost] }));
        let error = Error::from_catalog("lines", BusError::Rejected(rejection));
        assert!(error.to_string().contains(&ghost.to_string()));
        let Error::UnknownProducts { field, ids } = error else {
            panic!("unknown products expected");
        };
        assert_eq!((field.as_str(), ids), ("lines", vec![ghost.to_string()]));
        // A product missing from the catalog's answer is named too.
        let asked = lines(&[(ghost, 1)]).unwrap();
        let error = price("lines", &asked, &[]).unwrap_err();
        assert!(error.to_string().contains(&ghost.to_string()));
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
