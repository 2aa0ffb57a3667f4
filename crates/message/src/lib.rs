//! The building blocks of Banyan's *published language*.
//!
//! Every module publishes a contract crate: the requests it answers and the events it emits,
//! as plain serde types. Those crates depend on this one and on nothing else of Banyan's, so a
//! module can name another module's messages without seeing its logic (the `axum-core` split).
//!
//! # Layout
//! - [`Message`]: a type that crosses the bus, with its stable, versioned subject.
//! - [`Event`]: a fact, published to every subscribing module; carries the aggregate id that
//!   orders its delivery.
//! - [`Request`]: a command or query answered by exactly one handler, with its response type.
//! - [`Rejection`]: the domain error a handler answers with; it travels back intact over any
//!   transport.
//! - [`define_id!`]: typed UUIDv7 ids (`UserId`, `OrderId`, ...).
//! - [`Money`], [`Currency`]: integer minor units with an ISO 4217 code; never a float.

use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};

/// A type that travels on the bus.
///
/// Messages are plain data: `Serialize + DeserializeOwned` so that they can cross a process
/// boundary, `Send + Sync + 'static` so that in process they can be shared without copying.
pub trait Message: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The stable subject, `<module>.<message>.v<N>`. It never changes once published: a new
    /// shape of the message is a new version with a new subject.
    const SUBJECT: &'static str;
}

/// A fact that happened in the publishing module. Every subscribing module receives it once.
pub trait Event: Message {
    /// The aggregate this event is about. Events of one aggregate are handled in order by
    /// each subscriber; events of different aggregates may be handled concurrently.
    fn aggregate_id(&self) -> uuid::Uuid;
}

/// A command or query, answered by exactly one handler instance. `Clone`, so that the bus can
/// send an idempotent one again (see [`Request::IDEMPOTENT`]).
pub trait Request: Message + Clone {
    /// What a successful handler answers with.
    type Response: Serialize + DeserializeOwned + Debug + Send + Sync + 'static;
    /// Whether asking twice has the effect of asking once: a query, or a command that carries
    /// its own idempotency key. Only such requests are retried by the bus's edge policies;
    /// anything else fails to its caller at the first transient error, because it might have
    /// run already. Declared with `idempotent` in [`request!`].
    const IDEMPOTENT: bool = false;
}

/// The module that owns a subject: its first dot-separated segment.
pub fn module_of(subject: &str) -> &str {
    subject.split('.').next().unwrap_or(subject)
}

/// A domain error answered by a request handler, such as `insufficient_stock`.
///
/// `code` is stable and meant for branching; `message` is for people; `kind` says what sort of
/// refusal it is (so an edge can answer it without knowing any module's codes); `details`
/// carries structured data (which product ran out, for instance). It serializes the same on
/// every transport, so a rejection raised in another process reaches the caller unchanged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub kind: RejectionKind,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// What sort of refusal a [`Rejection`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The request is not acceptable as it is (a value out of range, an unknown reference).
    #[default]
    Invalid,
    /// It names something that does not exist.
    NotFound,
    /// It is valid, but the state of things forbids it now (not enough stock, a taken name).
    Conflict,
    /// The handler failed for a reason of its own, not the request's.
    Internal,
}

impl Rejection {
    /// A refusal of the request as it is ([`RejectionKind::Invalid`]).
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            kind: RejectionKind::Invalid,
            details: serde_json::Value::Null,
        }
    }

    /// A refusal because of the state of things ([`RejectionKind::Conflict`]).
    pub fn conflict(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Conflict,
            ..Self::new(code, message)
        }
    }

    /// A rejection for an id that names nothing.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self {
            kind: RejectionKind::NotFound,
            ..Self::new("not_found", format!("{what} {id} does not exist"))
        }
    }

    /// The handler failed for a reason of its own (its database, say).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            kind: RejectionKind::Internal,
            ..Self::new("internal", cause.to_string())
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

/// Makes a type an [`Event`] on `subject`, its aggregate being `aggregate` of the event `e`:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct WidgetMade { pub widget_id: uuid::Uuid }
/// banyan_message::event!(WidgetMade, "widgets.widget_made.v1", |e| e.widget_id);
/// # use banyan_message::{Event, Message};
/// assert_eq!(WidgetMade::SUBJECT, "widgets.widget_made.v1");
/// ```
#[macro_export]
macro_rules! event {
    ($event:ty, $subject:literal, |$e:ident| $aggregate:expr) => {
        impl $crate::Message for $event {
            const SUBJECT: &'static str = $subject;
        }

        impl $crate::Event for $event {
            fn aggregate_id(&self) -> ::uuid::Uuid {
                let $e = self;
                $aggregate
            }
        }
    };
}

/// Makes a type a [`Request`] on `subject`, answered with `response`:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct CountWidgets;
/// banyan_message::request!(CountWidgets, "widgets.count_widgets.v1", u64);
/// ```
#[macro_export]
macro_rules! request {
    ($request:ty, $subject:literal, $response:ty) => {
        $crate::request!(@impl $request, $subject, $response, false);
    };
    ($request:ty, $subject:literal, $response:ty, idempotent) => {
        $crate::request!(@impl $request, $subject, $response, true);
    };
    (@impl $request:ty, $subject:literal, $response:ty, $idempotent:literal) => {
        impl $crate::Message for $request {
            const SUBJECT: &'static str = $subject;
        }

        impl $crate::Request for $request {
            type Response = $response;
            const IDEMPOTENT: bool = $idempotent;
        }
    };
}

/// Defines a typed id: a UUID newtype that serializes as a bare UUID string.
///
/// ```
/// banyan_message::define_id!(
///     /// Identifies a widget.
///     WidgetId
/// );
/// let id = WidgetId::new();
/// assert_eq!(id, id.to_string().parse().unwrap());
/// ```
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub ::uuid::Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::uuid::Error;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                ::uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl ::std::convert::From<::uuid::Uuid> for $name {
            fn from(id: ::uuid::Uuid) -> Self {
                Self(id)
            }
        }
    };
}

/// An ISO 4217 currency code, one the standard lists (`EUR`, not `AAA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.as_bytes() {
            [a, b, c] if iso_currency::Currency::from_code(raw).is_some() => Ok(Self([*a, *b, *c])),
            _ => Err(format!(
                "`{raw}` is not an ISO 4217 currency code (three upper-case letters, like EUR)"
            )),
        }
    }

    /// Every code ISO 4217 lists, in order.
    pub fn all() -> Vec<String> {
        use iso_currency::IntoEnumIterator as _;
        let mut codes: Vec<String> = iso_currency::Currency::iter()
            .map(|currency| currency.code().to_owned())
            .collect();
        codes.sort();
        codes
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from three ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.as_str().to_owned()
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// In the HTTP API's document a currency is what it serializes as: a string of three upper-case
/// letters.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};

        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Currency::all()))
            .description(Some("An ISO 4217 currency code."))
            .examples(["EUR"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Currency {}

/// An amount of money in integer minor units (cents for EUR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    /// `self * quantity`, or `None` on overflow.
    pub fn times(self, quantity: i64) -> Option<Money> {
        Some(Self::new(
            self.amount_minor.checked_mul(quantity)?,
            self.currency,
        ))
    }

    /// The sum, or `None` on overflow or mixed currencies.
    pub fn plus(self, other: Money) -> Option<Money> {
        (self.currency == other.currency)
            .then(|| self.amount_minor.checked_add(other.amount_minor))
            .flatten()
            .map(|amount| Self::new(amount, self.currency))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "openapi")]
    #[test]
    fn the_schema_of_money_is_what_it_serializes_as() {
        use utoipa::{PartialSchema, ToSchema};

        let currency = serde_json::to_value(Currency::schema()).unwrap();
        assert_eq!(currency["type"], "string");
        let listed = currency["enum"].as_array().unwrap();
        assert!(listed.contains(&serde_json::json!("EUR")), "{currency}");
        assert!(!listed.contains(&serde_json::json!("AAA")), "{currency}");
        assert!(listed.len() > 150, "{}", listed.len());
        assert_eq!(Currency::name(), "Currency");
        let money = serde_json::to_value(Money::schema()).unwrap();
        let serialized = serde_json::to_value(Money::new(1999, Currency::EUR)).unwrap();
        let mut documented: Vec<&String> =
            money["properties"].as_object().unwrap().keys().collect();
        let mut actual: Vec<&String> = serialized.as_object().unwrap().keys().collect();
        documented.sort();
        actual.sort();
        assert_eq!(documented, actual);
    }

    #[test]
    fn currencies_are_the_codes_iso_4217_lists() {
        for good in ["EUR", "USD", "JPY", "CHF"] {
            assert!(Currency::parse(good).is_ok(), "{good}");
        }
        for bad in ["eur", "EU", "EURO", "E1R", "", "AAA", "QQQ"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        let money: Money =
            serde_json::from_str(r#"{"amount_minor":1999,"currency":"EUR"}"#).unwrap();
        assert_eq!(money, Money::new(1999, Currency::EUR));
        assert!(serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"eur"}"#).is_err());
    }

    #[test]
    fn money_arithmetic_refuses_overflow_and_mixed_currencies() {
        let eur = Money::new(i64::MAX, Currency::EUR);
        assert!(eur.times(2).is_none());
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        assert!(Money::new(1, Currency::EUR).plus(usd).is_none());
    }

    use super::*;

    #[test]
    fn a_subject_belongs_to_its_first_segment() {
        assert_eq!(module_of("orders.order_placed.v1"), "orders");
        assert_eq!(module_of("bare"), "bare");
    }

    #[test]
    fn a_rejection_survives_a_round_trip_through_json() {
        let rejection = Rejection::new("insufficient_stock", "not enough widgets")
            .with_details(serde_json::json!({ "product_id": "p1" }));
        let json = serde_json::to_string(&rejection).unwrap();
        let back: Rejection = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rejection);
    }
}
