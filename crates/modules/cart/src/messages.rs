//! What `cart` answers on the bus, and what it listens to.

use std::sync::Arc;

use banyan_bus::{Context, Delivered, HandlerError, ModuleBus, Rejection};
use banyan_cart_contract::{CartContents, CartLine, GetCart};
use banyan_catalog_contract::ProductId;
use banyan_orders_contract::OrderPlaced;

use crate::{State, domain, model::OrderedQuantities, store};

pub(crate) fn register(bus: &ModuleBus, state: &Arc<State>) {
    bus.handle(state, get_cart);
    bus.subscribe(state, on_order_placed);
}

async fn get_cart(
    state: Arc<State>,
    _cx: Context,
    request: GetCart,
) -> Result<CartContents, Rejection> {
    let rows = store::lines(state.outbox.db(), request.user_id.0)
        .await
        .map_err(Rejection::internal)?;
    Ok(CartContents {
        user_id: request.user_id,
        lines: rows
            .iter()
            .map(|row| CartLine {
                product_id: ProductId(row.product_id()),
                quantity: row.quantity,
            })
            .collect(),
    })
}

/// An order made from the cart takes what it ordered out of it, once (inbox). An order not
/// made from the cart has no effect here; it is answered at once, without a transaction: an
/// event that changes nothing needs no inbox entry to stay harmless when it comes again.
async fn on_order_placed(
    state: Arc<State>,
    delivered: Delivered<OrderPlaced>,
) -> Result<(), HandlerError> {
    if !delivered.from_cart {
        return Ok(());
    }
    let ordered = OrderedQuantities::from_lines(&delivered.lines);
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let removed = domain::take_ordered(&mut uow, delivered.user_id.0, &ordered).await?;
    uow.commit().await?;
    tracing::debug!(
        order_id = %delivered.order_id,
        user_id = %delivered.user_id,
        removed,
        "Ordered items taken out of the cart."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use banyan_bus::{Context, Message};
    use banyan_message::{Currency, Money};
    use banyan_orders_contract::{OrderId, OrderLine, UserId};

    use super::*;
    use crate::{
        model::{Error, Quantity},
        test_support::{TestDb, started},
    };

    async fn add(state: &State, user: UserId, product: ProductId, quantity: i64) {
        domain::add_item(
            &state.outbox,
            &state.bus,
            &Context::root(),
            user.0,
            product.0,
            Quantity::parse(quantity).unwrap(),
        )
        .await
        .unwrap();
    }

    async fn cart(db: &TestDb, user: UserId) -> Vec<(ProductId, i64)> {
        db.bus
            .request(&Context::root(), GetCart { user_id: user })
            .await
            .unwrap()
            .lines
            .into_iter()
            .map(|line| (line.product_id, line.quantity))
            .collect()
    }

    fn placed(user: UserId, lines: &[(ProductId, i64)], from_cart: bool) -> OrderPlaced {
        OrderPlaced {
            order_id: OrderId::new(),
            user_id: user,
            lines: lines
                .iter()
                .map(|&(product_id, quantity)| OrderLine {
                    product_id,
                    name: "Teapot".into(),
                    unit_price: Money::new(1999, Currency::EUR),
                    quantity,
                })
                .collect(),
            total: Money::new(1999, Currency::EUR),
            payment_method: "tok_ok".into(),
            from_cart,
        }
    }

    /// Delivers `event` as the bus would, with the given envelope (a fresh one if `None`).
    async fn deliver(db: &TestDb, event: &OrderPlaced, envelope: Option<&banyan_bus::Envelope>) {
        let envelope = envelope
            .cloned()
            .unwrap_or_else(|| Context::root().envelope(OrderPlaced::SUBJECT));
        let json = serde_json::to_string(event).unwrap();
        db.bus
            .inbound("nats")
            .deliver_remote_event(envelope, json.into(), event.order_id.0)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cart_is_read_oldest_line_first_and_is_empty_if_never_filled() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let (db, state) = started(&[a, b]).await;
        let user = UserId::new();
        assert!(cart(&db, user).await.is_empty());
        add(&state, user, b, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        add(&state, user, a, 2).await;
        add(&state, user, b, 4).await;
        assert_eq!(cart(&db, user).await, vec![(b, 5), (a, 2)]);
        assert!(cart(&db, UserId::new()).await.is_empty());
    }

    #[tokio::test]
    async fn an_order_from_the_cart_takes_its_quantities_out_once() {
        let (a, b, c) = (ProductId::new(), ProductId::new(), ProductId::new());
        let (db, state) = started(&[a, b, c]).await;
        let user = UserId::new();
        add(&state, user, a, 3).await;
        add(&state, user, b, 2).await;
        add(&state, user, c, 1).await;
        let order = placed(user, &[(a, 1), (b, 2), (b, 1), (ProductId::new(), 4)], true);
        let envelope = Context::root().envelope(OrderPlaced::SUBJECT);
        deliver(&db, &order, Some(&envelope)).await;
        assert_eq!(cart(&db, user).await, vec![(a, 2), (c, 1)]);
        // The same message again changes nothing.
        deliver(&db, &order, Some(&envelope)).await;
        assert_eq!(cart(&db, user).await, vec![(a, 2), (c, 1)]);
        // A new order of everything left empties the cart.
        deliver(&db, &placed(user, &[(a, 2), (c, 1)], true), None).await;
        assert!(cart(&db, user).await.is_empty());
    }

    #[tokio::test]
    async fn an_order_not_made_from_the_cart_leaves_it_untouched() {
        let a = ProductId::new();
        let (db, state) = started(&[a]).await;
        let user = UserId::new();
        add(&state, user, a, 3).await;
        deliver(&db, &placed(user, &[(a, 3)], false), None).await;
        assert_eq!(cart(&db, user).await, vec![(a, 3)]);
        // Someone else's order from their cart does not touch this one either.
        deliver(&db, &placed(UserId::new(), &[(a, 3)], true), None).await;
        assert_eq!(cart(&db, user).await, vec![(a, 3)]);
    }

    #[tokio::test]
    async fn a_line_and_a_cart_stay_within_their_limits() {
        let products: Vec<ProductId> = (0..101).map(|_| ProductId::new()).collect();
        let (db, state) = started(&products).await;
        let user = UserId::new();
        add(&state, user, products[0], 999).await;
        let add_more = |product: ProductId, quantity: i64| {
            let state = state.clone();
            async move {
                domain::add_item(
                    &state.outbox,
                    &state.bus,
                    &Context::root(),
                    user.0,
                    product.0,
                    Quantity::parse(quantity).unwrap(),
                )
                .await
            }
        };
        let limit = |error: Error| match error {
            Error::Limit { field, .. } => field,
            other => panic!("a limit expected, got {other:?}"),
        };
        assert_eq!(
            limit(add_more(products[0], 2).await.unwrap_err()),
            "quantity"
        );
        add_more(products[0], 1).await.unwrap();
        for &product in &products[1..100] {
            add_more(product, 1).await.unwrap();
        }
        assert_eq!(
            limit(add_more(products[100], 1).await.unwrap_err()),
            "lines"
        );
        // A full cart still takes more of a product it holds.
        add_more(products[99], 5).await.unwrap();
        let lines = cart(&db, user).await;
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[0], (products[0], 1_000));
        assert_eq!(lines[99], (products[99], 6));
        let ghost = ProductId::new();
        let error = add_more(ghost, 1).await.unwrap_err();
        assert!(
            matches!(error, Error::UnknownProduct(id) if id == ghost.0),
            "{error:?}"
        );
    }
}
