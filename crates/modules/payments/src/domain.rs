//! What `payments` does: its two saga steps (an order placed, its stock held) and the one
//! charge of an order, each emitting its outcome in the caller's unit of work.

use banyan_bus::{Context, Outbox, UnitOfWork};
use banyan_db::{now_millis, sqlx};
use banyan_message::Currency;
use banyan_payments_contract::{PaymentCompleted, PaymentFailed, PaymentId};
use uuid::Uuid;

use crate::{
    model::{Error, Intent, Outcome, Provider},
    store::{self, PaymentRow},
};

/// Records what an order asks to be charged. If its stock was held already (its
/// `InventoryReserved` overtook this event), charges it now: the payment made, if any.
pub(crate) async fn order_placed(
    uow: &mut UnitOfWork,
    cx: &Context,
    provider: &Provider,
    intent: &Intent,
) -> Result<Option<PaymentRow>, sqlx::Error> {
    store::insert_intent(uow, intent).await?;
    if store::take_early_reservation(uow, intent.order_id).await? {
        charge(uow, cx, provider, intent).await
    } else {
        Ok(None)
    }
}

/// What [`stock_held`] did.
#[derive(Debug)]
pub(crate) enum Held {
    /// The order was charged now (`Some`), or before (`None`).
    Charged(Option<PaymentRow>),
    /// Its `OrderPlaced` has not been seen yet: noted, to be charged when it is.
    Early,
}

/// The order's stock is held: charge it, once. If its `OrderPlaced` has not been handled yet
/// (a redelivery can overtake), note it: the order is charged when its intent is recorded.
pub(crate) async fn stock_held(
    uow: &mut UnitOfWork,
    cx: &Context,
    provider: &Provider,
    order_id: Uuid,
) -> Result<Held, sqlx::Error> {
    let Some(intent) = store::find_intent(uow, order_id).await? else {
        store::insert_early_reservation(uow, order_id).await?;
        return Ok(Held::Early);
    };
    charge(uow, cx, provider, &intent).await.map(Held::Charged)
}

/// The payment of `order_id`, with its currency checked.
pub(crate) async fn payment_of(
    outbox: &Outbox,
    order_id: Uuid,
) -> Result<(PaymentRow, Currency), Error> {
    let row = store::find_payment(outbox.db(), order_id)
        .await?
        .ok_or(Error::NoPayment(order_id))?;
    let currency = Currency::parse(&row.currency).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok((row, currency))
}

/// Charges the order of `intent` through `provider`, unless it was charged before, and
/// announces the outcome (`PaymentCompleted` or `PaymentFailed`) in the unit of work. `None`
/// if the order already had a payment: then nothing changes.
pub(crate) async fn charge(
    uow: &mut UnitOfWork,
    cx: &Context,
    provider: &Provider,
    intent: &Intent,
) -> Result<Option<PaymentRow>, sqlx::Error> {
    let outcome = provider.charge(intent.order_id, intent.amount, &intent.payment_method);
    let payment_id = PaymentId::new();
    let failure_reason = match outcome {
        Outcome::Completed => None,
        Outcome::Failed(reason) => Some(reason),
    };
    let row = PaymentRow {
        id: payment_id.to_string(),
        order_id: intent.order_id.to_string(),
        user_id: intent.user_id.to_string(),
        amount_minor: intent.amount.amount_minor,
        currency: intent.amount.currency.to_string(),
        status: match outcome {
            Outcome::Completed => store::COMPLETED,
            Outcome::Failed(_) => store::FAILED,
        }
        .to_owned(),
        failure_reason: failure_reason.map(|reason| reason.as_str().to_owned()),
        created_at: now_millis(),
    };
    // The unique order id is what makes this the only charge, however the events arrive.
    if !store::insert_payment(uow, &row).await? {
        return Ok(None);
    }
    match failure_reason {
        None => {
            let completed = PaymentCompleted {
                payment_id,
                order_id: intent.order_id,
                amount: intent.amount,
            };
            uow.emit(cx, completed).await?;
        }
        Some(reason) => {
            let failed = PaymentFailed {
                payment_id,
                order_id: intent.order_id,
                amount: intent.amount,
                reason: reason.as_str().to_owned(),
            };
            uow.emit(cx, failed).await?;
        }
    }
    Ok(Some(row))
}
