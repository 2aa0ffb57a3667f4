//! The values of `payments` and the rules on them (the simulated provider), and the module's
//! error.

use std::collections::HashSet;

use banyan_db::sqlx;
use banyan_message::Money;
use banyan_orders_contract::OrderPlaced;
use uuid::Uuid;

/// What can go wrong in `payments`. It reads as an `ApiError` at the HTTP edge and as a
/// `Rejection` on the bus.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("order {0} has no payment")]
    NoPayment(Uuid),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
    /// A stored row that does not read back (a currency this build does not know).
    #[error("{0}")]
    Corrupt(String),
}

/// A provider setting that failed validation: which key of `[modules.payments]`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidSetting {
    pub(crate) key: &'static str,
    pub(crate) reason: String,
}

/// Why the provider refused a charge, as `PaymentFailed.reason` and `payments.failure_reason`
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureReason {
    /// The payment method is one the provider declines (the declining test card).
    Declined,
    /// The amount is above the provider's limit.
    OverLimit,
    /// The provider failed (the chaos failure rate).
    ProviderFailed,
}

impl FailureReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureReason::Declined => "payment_declined",
            FailureReason::OverLimit => "payment_over_limit",
            FailureReason::ProviderFailed => "payment_failed",
        }
    }
}

/// What the provider answers to a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Failed(FailureReason),
}

/// The simulated provider: deterministic, so that every branch of the saga can be tested, and
/// configurable. Its rules, in order: a declined method fails, an amount above the limit
/// fails, a `failure_rate` share of orders fails; every other charge completes.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    declined_methods: HashSet<String>,
    amount_limit_minor: i64,
    failure_rate: f64,
}

impl Default for Provider {
    fn default() -> Self {
        Self {
            declined_methods: HashSet::from([Self::DECLINED_METHOD.to_owned()]),
            amount_limit_minor: Self::AMOUNT_LIMIT_MINOR,
            failure_rate: 0.0,
        }
    }
}

impl Provider {
    /// The payment method declined unless configured otherwise: the declining test card.
    pub(crate) const DECLINED_METHOD: &'static str = "tok_declined";
    /// The amount limit unless configured otherwise: 100 000 000 minor units (a million euros).
    pub(crate) const AMOUNT_LIMIT_MINOR: i64 = 100_000_000;

    /// A provider with these rules. `failure_rate` must be 0 to 1, the limit not negative, and
    /// no declined method empty.
    pub(crate) fn new(
        declined_methods: Vec<String>,
        amount_limit_minor: i64,
        failure_rate: f64,
    ) -> Result<Self, InvalidSetting> {
        if declined_methods
            .iter()
            .any(|method| method.trim().is_empty())
        {
            return Err(InvalidSetting {
                key: "declined_methods",
                reason: "a payment method must not be empty".into(),
            });
        }
        if amount_limit_minor < 0 {
            return Err(InvalidSetting {
                key: "amount_limit_minor",
                reason: format!("must not be negative (got {amount_limit_minor})"),
            });
        }
        // NaN is not in the range either.
        if !(0.0..=1.0).contains(&failure_rate) {
            return Err(InvalidSetting {
                key: "failure_rate",
                reason: format!("must be between 0 and 1 (got {failure_rate})"),
            });
        }
        Ok(Self {
            declined_methods: declined_methods.into_iter().collect(),
            amount_limit_minor,
            failure_rate,
        })
    }

    /// What charging `amount` to `payment_method` for the order `order_id` gives. The same
    /// arguments always give the same outcome.
    pub(crate) fn charge(&self, order_id: Uuid, amount: Money, payment_method: &str) -> Outcome {
        if self.declined_methods.contains(payment_method) {
            Outcome::Failed(FailureReason::Declined)
        } else if amount.amount_minor > self.amount_limit_minor {
            Outcome::Failed(FailureReason::OverLimit)
        } else if chaos_draw(order_id) < self.failure_rate {
            Outcome::Failed(FailureReason::ProviderFailed)
        } else {
            Outcome::Completed
        }
    }
}

/// A number in `[0, 1)` that follows from the order id alone, spread evenly over ids: an order
/// fails under a failure rate `r` when its draw is below `r`, so a rate of 0 fails none, 1
/// fails all, and the same order always draws the same.
///
/// FNV-1a over the id's bytes, then the `fmix64` finaliser of MurmurHash3 so that ids that
/// differ in a few bits (UUIDv7s minted in one millisecond) draw far apart.
pub(crate) fn chaos_draw(order_id: Uuid) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in order_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    // The top 53 bits: exactly representable, and below 2^53.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// What an order asks to be charged, as `OrderPlaced` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intent {
    pub(crate) order_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) amount: Money,
    pub(crate) payment_method: String,
}

impl From<&OrderPlaced> for Intent {
    fn from(placed: &OrderPlaced) -> Self {
        Self {
            order_id: placed.order_id.0,
            user_id: placed.user_id.0,
            amount: placed.total,
            payment_method: placed.payment_method.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use banyan_message::Currency;

    use super::*;

    fn eur(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::EUR)
    }

    fn with_rate(failure_rate: f64) -> Provider {
        Provider::new(vec!["tok_declined".into()], 10_000, failure_rate).unwrap()
    }

    #[test]
    fn a_declined_method_fails_whatever_the_amount() {
        let provider = Provider::default();
        for amount in [1, Provider::AMOUNT_LIMIT_MINOR + 1] {
            assert_eq!(
                provider.charge(Uuid::now_v7(), eur(amount), "tok_declined"),
                Outcome::Failed(FailureReason::Declined)
            );
        }
        assert_eq!(
            provider.charge(Uuid::now_v7(), eur(1), "tok_visa"),
            Outcome::Completed
        );
        let custom = Provider::new(vec!["tok_stolen".into()], 10_000, 0.0).unwrap();
        assert_eq!(
            custom.charge(Uuid::now_v7(), eur(1), "tok_declined"),
            Outcome::Completed
        );
        assert_eq!(
            custom.charge(Uuid::now_v7(), eur(1), "tok_stolen"),
            Outcome::Failed(FailureReason::Declined)
        );
    }

    #[test]
    fn an_amount_above_the_limit_fails_and_one_at_the_limit_completes() {
        let provider = with_rate(0.0);
        assert_eq!(
            provider.charge(Uuid::now_v7(), eur(10_000), "tok_visa"),
            Outcome::Completed
        );
        assert_eq!(
            provider.charge(Uuid::now_v7(), eur(10_001), "tok_visa"),
            Outcome::Failed(FailureReason::OverLimit)
        );
        assert_eq!(
            Provider::default().charge(
                Uuid::now_v7(),
                eur(Provider::AMOUNT_LIMIT_MINOR + 1),
                "tok_visa"
            ),
            Outcome::Failed(FailureReason::OverLimit)
        );
    }

    #[test]
    fn a_failure_rate_of_zero_never_fails_and_of_one_always_fails() {
        let (never, always) = (with_rate(0.0), with_rate(1.0));
        for _ in 0..10_000 {
            let id = Uuid::now_v7();
            assert_eq!(never.charge(id, eur(100), "tok_visa"), Outcome::Completed);
            assert_eq!(
                always.charge(id, eur(100), "tok_visa"),
                Outcome::Failed(FailureReason::ProviderFailed)
            );
        }
        // The draw stays in [0, 1) even for the extreme ids.
        for id in [Uuid::nil(), Uuid::max()] {
            assert!((0.0..1.0).contains(&chaos_draw(id)));
        }
    }

    #[test]
    fn the_same_order_always_gets_the_same_outcome_and_the_rate_is_kept_overall() {
        let provider = with_rate(0.3);
        let ids: Vec<Uuid> = (0..20_000).map(|_| Uuid::now_v7()).collect();
        let first: Vec<Outcome> = ids
            .iter()
            .map(|&id| provider.charge(id, eur(100), "tok_visa"))
            .collect();
        let again: Vec<Outcome> = ids
            .iter()
            .map(|&id| with_rate(0.3).charge(id, eur(100), "tok_visa"))
            .collect();
        assert_eq!(first, again);
        let failed = first.iter().filter(|o| **o != Outcome::Completed).count();
        let share = failed as f64 / ids.len() as f64;
        assert!((0.27..0.33).contains(&share), "{share}");
        // A known id draws a known number, in every process and on every platform.
        let id = Uuid::parse_str("0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d").unwrap();
        assert_eq!(
            chaos_draw(id).to_bits(),
            0.973_481_809_825_686_2_f64.to_bits()
        );
        assert_eq!(
            with_rate(0.97).charge(id, eur(100), "tok_visa"),
            Outcome::Completed
        );
        assert_eq!(
            with_rate(0.98).charge(id, eur(100), "tok_visa"),
            Outcome::Failed(FailureReason::ProviderFailed)
        );
    }

    #[test]
    fn declining_comes_before_the_limit_and_the_limit_before_chaos() {
        let always = with_rate(1.0);
        assert_eq!(
            always.charge(Uuid::now_v7(), eur(20_000), "tok_declined"),
            Outcome::Failed(FailureReason::Declined)
        );
        assert_eq!(
            always.charge(Uuid::now_v7(), eur(20_000), "tok_visa"),
            Outcome::Failed(FailureReason::OverLimit)
        );
    }

    #[test]
    fn provider_settings_out_of_range_name_their_key() {
        let bad = [
            (Provider::new(vec![], 1, 1.01), "failure_rate"),
            (Provider::new(vec![], 1, -0.01), "failure_rate"),
            (Provider::new(vec![], 1, f64::NAN), "failure_rate"),
            (Provider::new(vec![], -1, 0.0), "amount_limit_minor"),
            (Provider::new(vec![" ".into()], 1, 0.0), "declined_methods"),
        ];
        for (result, key) in bad {
            assert_eq!(result.unwrap_err().key, key);
        }
        assert!(Provider::new(vec![], 0, 1.0).is_ok());
    }

    #[test]
    fn failure_reasons_read_as_the_saga_names_them() {
        assert_eq!(FailureReason::Declined.as_str(), "payment_declined");
        assert_eq!(FailureReason::OverLimit.as_str(), "payment_over_limit");
        assert_eq!(FailureReason::ProviderFailed.as_str(), "payment_failed");
    }
}
