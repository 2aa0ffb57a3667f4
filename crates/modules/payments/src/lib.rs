//! `payments`: charging orders through a simulated payment provider.
//!
//! Owns the `payment_intents`, `early_reservations` and `payments` tables. Records what each
//! order asks to be charged from `OrderPlaced`, and charges it once its stock is held
//! (`InventoryReserved`): exactly once per order, `UNIQUE (order_id)` sees to that even when
//! events arrive twice or at once. Emits `PaymentCompleted` or `PaymentFailed`; answers
//! `GetPayment`.
//!
//! The provider is simulated, deterministic and configured under `[modules.payments]`: a
//! declined payment method, an amount limit, and a failure rate for chaos runs whose failures
//! fall on the same orders every time (decided by the order id).
//!
//! # Layout (the same in every module crate)
//! - `domain`: the provider's rules (`Provider`), the intent to charge, and the charge.
//! - `store`: every SQL statement of the module.
//! - `http`: the route under `/api/v1/payments`.
//! - `messages`: bus request handlers and event subscriptions.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod domain;
mod http;
mod messages;
mod model;
mod store;

use std::sync::Arc;

use banyan_kit::ModuleContext;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_payments_contract as contract;

banyan_kit::module! {
    /// The payments module, as the app mounts it.
    pub struct Payments {
        name: "payments",
        description: "Payments of orders (a simulated provider).",
        migrations: sqlx::migrate!("../../../migrations/payments"),
        calls: [],
        publishes: [contract::PaymentCompleted, contract::PaymentFailed],
        start: start,
        document: http::document,
    }
}

/// `[modules.payments]` settings: the simulated provider's rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Payment methods the provider declines (`payment_declined`): the declining test card.
    declined_methods: Vec<String>,
    /// The largest amount, in minor units, the provider charges; above it a charge fails with
    /// `payment_over_limit`.
    amount_limit_minor: i64,
    /// The fraction of charges that fail with `payment_failed`, 0 to 1 (chaos runs). Which
    /// orders fail follows from their ids: the same order always gets the same outcome.
    failure_rate: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            declined_methods: vec![model::Provider::DECLINED_METHOD.to_owned()],
            amount_limit_minor: model::Provider::AMOUNT_LIMIT_MINOR,
            failure_rate: 0.0,
        }
    }
}

impl Settings {
    /// The provider these settings describe; an error names the first bad key.
    fn provider(self) -> anyhow::Result<model::Provider> {
        model::Provider::new(
            self.declined_methods,
            self.amount_limit_minor,
            self.failure_rate,
        )
        .map_err(|invalid| {
            anyhow::anyhow!(
                "invalid setting modules.payments.{}: {}",
                invalid.key,
                invalid.reason
            )
        })
    }
}

async fn start(ctx: ModuleContext) -> anyhow::Result<OpenApiRouter> {
    let settings: Settings = ctx.settings()?;
    let state = Arc::new(State {
        outbox: ctx.outbox.clone(),
        provider: settings.provider()?,
    });
    messages::register(&ctx.bus, &state);
    Ok(http::routes(state))
}

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
    provider: model::Provider,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> anyhow::Result<model::Provider> {
        use figment::providers::{Format, Toml};

        let settings: Settings = figment::Figment::from(Toml::string(toml))
            .extract()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        settings.provider()
    }

    #[test]
    fn settings_default_to_a_declining_test_card_a_high_limit_and_no_chaos() {
        let settings = Settings::default();
        assert_eq!(settings.declined_methods, vec!["tok_declined"]);
        assert_eq!(settings.amount_limit_minor, 100_000_000);
        assert_eq!(settings.failure_rate, 0.0);
        assert!(parse("").is_ok());
        assert!(parse("failure_rate = 1\namount_limit_minor = 0").is_ok());
    }

    #[test]
    fn a_bad_setting_is_an_error_naming_its_key() {
        for (toml, key) in [
            ("failure_rate = 1.5", "modules.payments.failure_rate"),
            ("failure_rate = -0.1", "modules.payments.failure_rate"),
            (
                "amount_limit_minor = -1",
                "modules.payments.amount_limit_minor",
            ),
            (
                "declined_methods = [\"\"]",
                "modules.payments.declined_methods",
            ),
        ] {
            let error = parse(toml).unwrap_err().to_string();
            assert!(error.contains(key), "{toml}: {error}");
        }
        let error = parse("failure_rat = 0.5").unwrap_err().to_string();
        assert!(error.contains("failure_rat"), "{error}");
    }
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    pub(crate) use banyan_kit::testing::TestModule as TestDb;

    /// Opens a fresh payments database (see `banyan_kit::testing::TestModule`).
    pub(crate) async fn open() -> TestDb {
        TestDb::of(&crate::Payments).await
    }

    pub(crate) use banyan_kit::testing::call;

    pub(crate) use banyan_kit::testing::{token, with_auth};
}
