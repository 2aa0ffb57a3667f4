//! The values of `notifications` and the rules on them (what a notice says), and the
//! module's error.

use banyan_bus::Envelope;
use banyan_db::sqlx;
use banyan_kit::Invalid;
use banyan_message::Money;
use uuid::Uuid;

/// What can go wrong in `notifications`. It reads as an `ApiError` at the HTTP edge and as a
/// `Rejection` on the bus.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Welcome,
    OrderConfirmed,
    OrderCancelled,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::OrderConfirmed => "order_confirmed",
            Kind::OrderCancelled => "order_cancelled",
        }
    }
}

/// A notification's content, before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub(crate) kind: Kind,
    pub(crate) subject: String,
    pub(crate) body: String,
}

impl Notice {
    pub(crate) fn welcome(username: &str) -> Self {
        Self {
            kind: Kind::Welcome,
            subject: format!("Welcome to Banyan, {username}!"),
            body: format!("Hello {username}, your Banyan account is ready. Happy shopping!"),
        }
    }

    pub(crate) fn order_confirmed(order_id: Uuid, total: Money) -> Self {
        let total = format_money(total);
        Self {
            kind: Kind::OrderConfirmed,
            subject: format!("Your order {order_id} is confirmed"),
            body: format!(
                "Your order {order_id} is paid and confirmed. Total: {total}. Thank you!"
            ),
        }
    }

    pub(crate) fn order_cancelled(order_id: Uuid, reason: &str) -> Self {
        let why = match reason {
            "out_of_stock" => "some of its items are out of stock",
            "payment_declined" => "the payment was declined",
            "payment_over_limit" => "the amount is over the payment limit",
            "payment_failed" => "the payment failed",
            "cancelled_by_admin" => "it was cancelled by our staff",
            _ => "it could not be completed",
        };
        Self {
            kind: Kind::OrderCancelled,
            subject: format!("Your order {order_id} was cancelled"),
            body: format!("Your order {order_id} was cancelled: {why} (reason: {reason})."),
        }
    }
}

/// An amount as people read it: minor units shown with two decimals, then the currency
/// (`1234` EUR is "12.34 EUR").
pub(crate) fn format_money(money: Money) -> String {
    let sign = if money.amount_minor < 0 { "-" } else { "" };
    let amount = money.amount_minor.unsigned_abs();
    format!(
        "{sign}{}.{:02} {}",
        amount / 100,
        amount % 100,
        money.currency
    )
}

/// How many notifications one bus request may list: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit(u32);

impl Limit {
    pub(crate) const MAX: u32 = 100;

    pub(crate) fn parse(raw: u32) -> Result<Self, Invalid> {
        if !(1..=Self::MAX).contains(&raw) {
            return Err(Invalid::new("limit", "must be 1 to 100"));
        }
        Ok(Self(raw))
    }

    pub(crate) fn get(self) -> i64 {
        i64::from(self.0)
    }
}

/// Whom a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    pub(crate) username: String,
}

/// A notification's id is the message id of the event that caused it: one notification per
/// event, and, the message id being a UUIDv7 made when the event was (monotonic within the
/// publishing process), notifications list in the order their events happened even when one
/// was handled late (a retry, a replay, a busy partition), and even within one millisecond.
pub(crate) fn notification_id(cause: &Envelope) -> Uuid {
    cause.message_id
}

#[cfg(test)]
mod tests {
    use banyan_message::Currency;

    use super::*;

    #[test]
    fn money_reads_with_two_decimals_and_its_currency() {
        assert_eq!(format_money(Money::new(1234, Currency::EUR)), "12.34 EUR");
        assert_eq!(format_money(Money::new(5, Currency::EUR)), "0.05 EUR");
        assert_eq!(format_money(Money::new(100, Currency::EUR)), "1.00 EUR");
        assert_eq!(format_money(Money::new(-250, Currency::EUR)), "-2.50 EUR");
        assert_eq!(
            format_money(Money::new(i64::MIN, Currency::EUR)),
            "-92233720368547758.08 EUR"
        );
    }

    #[test]
    fn order_notices_name_the_order_and_its_total_or_the_reason() {
        let order = Uuid::now_v7();
        let confirmed = Notice::order_confirmed(order, Money::new(1234, Currency::EUR));
        assert_eq!(confirmed.kind.as_str(), "order_confirmed");
        assert!(confirmed.subject.contains(&order.to_string()));
        assert!(confirmed.body.contains(&order.to_string()));
        assert!(confirmed.body.contains("12.34 EUR"));
        let cancelled = Notice::order_cancelled(order, "payment_declined");
        assert_eq!(cancelled.kind.as_str(), "order_cancelled");
        assert!(cancelled.subject.contains(&order.to_string()));
        assert!(cancelled.body.contains("payment_declined"));
        assert!(cancelled.body.contains("declined"));
        let odd = Notice::order_cancelled(order, "solar_flare");
        assert!(odd.body.contains("solar_flare"));
        assert_eq!(Notice::welcome("alice").kind.as_str(), "welcome");
        assert!(Notice::welcome("alice").subject.contains("alice"));
    }

    #[test]
    fn notification_ids_sort_in_the_order_their_events_were_made() {
        let events: Vec<_> = (0..1_000)
            .map(|_| banyan_bus::Context::root().envelope("users.user_registered.v1"))
            .collect();
        let ids: Vec<String> = events
            .iter()
            .map(|e| notification_id(e).to_string())
            .collect();
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids follow the events' order"
        );
        assert_eq!(notification_id(&events[0]), events[0].message_id);
    }

    #[test]
    fn a_listing_asks_for_one_to_a_hundred() {
        assert_eq!(Limit::parse(1).unwrap().get(), 1);
        assert_eq!(Limit::parse(100).unwrap().get(), 100);
        for bad in [0, 101, u32::MAX] {
            let invalid = Limit::parse(bad).unwrap_err();
            assert_eq!(invalid.field, "limit");
        }
    }
}
