//! What `cart` does: add to a cart, and take what was ordered out of it.

use banyan_bus::{BusError, Context, ModuleBus, Outbox, UnitOfWork};
use banyan_catalog_contract::{GetProducts, ProductId};
use banyan_db::sqlx;
use banyan_users_contract::{GetUser, UserId};
use uuid::Uuid;

use crate::{
    model::{Error, MAX_LINES, OrderedQuantities, Quantity},
    store,
};

/// Adds `quantity` of a product to a user's cart, creating the line if missing. The product
/// must be in the catalog (404 otherwise); the line may not go beyond [`Quantity::MAX`], nor the
/// cart beyond [`MAX_LINES`] lines (409 either way, and nothing changes).
pub(crate) async fn add_item(
    outbox: &Outbox,
    bus: &ModuleBus,
    cx: &Context,
    user_id: Uuid,
    product_id: Uuid,
    quantity: Quantity,
) -> Result<(), Error> {
    // Asked before the transaction, so that no write lock is held while they answer; both at
    // once, so the cart waits for the slower of the two only.
    let products = GetProducts {
        product_ids: vec![ProductId(product_id)],
    };
    let owner = GetUser {
        user_id: UserId(user_id),
    };
    let (product, user) = futures::join!(bus.request(cx, products), bus.request(cx, owner));
    match user {
        Ok(_) => {}
        Err(BusError::Rejected(rejection)) if rejection.is("not_found") => {
            return Err(Error::NoUser(user_id));
        }
        Err(other) => return Err(other.into()),
    }
    match product {
        Ok(_) => {}
        Err(BusError::Rejected(rejection)) if rejection.is("unknown_product") => {
            return Err(Error::UnknownProduct(product_id));
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
            Some(held) => Error::Limit {
                field: "quantity",
                reason: format!(
                    "the line holds {held}; adding {} would go beyond {}",
                    quantity.get(),
                    Quantity::MAX
                ),
            },
            None => Error::Limit {
                field: "lines",
                reason: format!("a cart holds at most {MAX_LINES} lines"),
            },
        });
    }
    uow.commit().await?;
    Ok(())
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
