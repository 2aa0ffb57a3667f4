//! What `orders` does: place an order, end it as the saga decides, move it on.
//!
//! Placing an order is two steps, so that no write transaction is ever held across a bus
//! request: [`prepare`] validates what the client asked for, reads the cart and the catalog
//! and prices the lines; [`place`] then writes the order and announces it in one unit of work.
//! [`end_saga`] is what the saga's event handlers apply, inside their own unit of work.

use banyan_bus::{Context, ModuleBus, Outbox, UnitOfWork};
use banyan_cart_contract::GetCart;
use banyan_catalog_contract::GetProducts;
use banyan_db::{now_millis, sqlx};
use banyan_kit::Invalid;
use banyan_message::Money;
use banyan_orders_contract::{
    OrderCancelled, OrderConfirmed, OrderId, OrderPlaced, ProductId, UserId,
};
use uuid::Uuid;

use crate::{
    model::{Error, NewOrder, PaymentMethod, PlaceOrder, RequestedLines, Status, price},
    store::{self, LineRow, Order, OrderRow},
};

/// Validates an order for `user_id`, reads their cart if it is made from it, and prices it
/// from the catalog. Writes nothing.
pub(crate) async fn prepare(
    bus: &ModuleBus,
    cx: &Context,
    user_id: Uuid,
    request: PlaceOrder,
) -> Result<NewOrder, Error> {
    let payment_method = PaymentMethod::parse(
        request
            .payment_method
            .as_deref()
            .unwrap_or(PaymentMethod::DEFAULT),
    )?;
    let from_cart = request.from_cart.unwrap_or(false);
    let (field, lines) = match (request.lines, from_cart) {
        (Some(_), true) => {
            return Err(Invalid::new(
                "from_cart",
                "give either lines or from_cart: true, not both",
            )
            .into());
        }
        (None, false) => {
            return Err(Invalid::new(
                "lines",
                "give the lines to order, or from_cart: true to order the cart",
            )
            .into());
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
                return Err(Error::EmptyCart);
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
        .map_err(|e| Error::from_catalog(field, e))?;
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
pub(crate) async fn place(outbox: &Outbox, cx: &Context, order: NewOrder) -> Result<Order, Error> {
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
    /// Paid `paid`, with its stock held.
    Confirm { paid: Money },
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

/// The cancel reason of an order paid another amount than its total.
pub(crate) const PAYMENT_MISMATCH: &str = "payment_mismatch";

/// Applies the saga's outcome to a pending order and emits `OrderConfirmed` or
/// `OrderCancelled` in the caller's unit of work. Only a pending order changes, so applying
/// an outcome twice (or a late one) does nothing. The caller commits.
///
/// A payment confirms only an order whose total it is, amount and currency: orders checks the
/// facts it can check rather than trusting whoever sent the event. Any other amount cancels
/// the order (`payment_mismatch`) with a warning for an operator.
pub(crate) async fn end_saga(
    uow: &mut UnitOfWork,
    cx: &Context,
    order_id: Uuid,
    outcome: Outcome,
) -> Result<Ended, sqlx::Error> {
    let outcome = match outcome {
        Outcome::Confirm { paid } => match store::row_in(uow, order_id).await? {
            Some(order) if order.status() == Status::Pending && order.total() != paid => {
                tracing::warn!(%order_id, total = ?order.total(), ?paid, "A payment of another amount than the order's total; cancelling the order.");
                Outcome::Cancel(PAYMENT_MISMATCH.to_owned())
            }
            _ => Outcome::Confirm { paid },
        },
        other => other,
    };
    let (status, reason) = match &outcome {
        Outcome::Confirm { .. } => (Status::Confirmed, None),
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
        Outcome::Confirm { .. } => {
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
) -> Result<(), Error> {
    let mut uow = outbox.begin().await?;
    let current = store::status_in(&mut uow, order_id)
        .await?
        .ok_or(Error::NotFound(order_id))?;
    let from = Status::parse(&current).unwrap_or(Status::Pending);
    if !from.may_become(to) || !store::move_status(&mut uow, order_id, from, to).await? {
        return Err(Error::InvalidTransition { from, to });
    }
    uow.commit().await?;
    tracing::info!(%order_id, from = from.as_str(), to = to.as_str(), "Order status changed.");
    Ok(())
}

/// The order `order_id`, with its lines.
pub(crate) async fn find(outbox: &Outbox, order_id: Uuid) -> Result<Order, Error> {
    store::find(outbox.db(), order_id)
        .await?
        .ok_or(Error::NotFound(order_id))
}
