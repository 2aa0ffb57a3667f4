//! What `catalog` does with products: create and change them, each in one unit of work with
//! the event it announces.

use banyan_bus::{Context, Outbox};
use banyan_catalog_contract::{PriceChanged, ProductCreated, ProductId};
use std::sync::Arc;

use uuid::Uuid;

use crate::{
    model::{Category, Description, Error, NewProduct, Price, ProductChanges, ProductName},
    store::{self, ProductCache, ProductRow},
};

/// Creates a product and announces it, in one transaction.
pub(crate) async fn create(
    outbox: &Outbox,
    products: &Arc<ProductCache>,
    cx: &Context,
    product: NewProduct,
) -> Result<ProductRow, Error> {
    let product = product.validate()?;
    let mut uow = outbox.begin().await?;
    if store::sku_taken(&mut uow, &product.sku).await? {
        return Err(Error::SkuTaken);
    }
    let row = store::insert(&mut uow, &product)
        .await
        .map_err(Error::taken_or_storage)?;
    uow.emit(
        cx,
        ProductCreated {
            product_id: ProductId(row.id()),
            sku: row.sku.clone(),
            name: row.name.clone(),
            category: row.category.clone(),
            price: row.price(),
        },
    )
    .await?;
    // Listing pages may now lack it: forgotten, here and (announced) in the other instances.
    let (forget, id) = (products.clone(), row.id());
    uow.on_commit(move || forget.forget(id));
    uow.commit().await.map_err(Error::taken_or_storage)?;
    tracing::info!(product_id = %row.id, sku = %row.sku, "Product created.");
    Ok(row)
}

/// Applies an admin's changes; announces a new price, in the same transaction.
pub(crate) async fn update(
    outbox: &Outbox,
    products: &Arc<ProductCache>,
    cx: &Context,
    id: Uuid,
    changes: ProductChanges,
) -> Result<ProductRow, Error> {
    let changes = changes.validate()?;
    let mut uow = outbox.begin().await?;
    // Locks the row first (on PostgreSQL), so two price changes racing each announce the price
    // they really replaced.
    let Some(current) = store::lock(&mut uow, id).await? else {
        return Err(Error::NotFound(id));
    };
    let old_price = current.price();
    let new_price = changes.price.map_or(old_price, Price::money);
    let updated = store::update(
        &mut uow,
        id,
        changes
            .name
            .as_ref()
            .map_or(current.name.as_str(), ProductName::as_str),
        changes
            .description
            .as_ref()
            .map_or(current.description.as_str(), Description::as_str),
        changes
            .category
            .as_ref()
            .map_or(current.category.as_str(), Category::as_str),
        new_price,
    )
    .await?;
    if new_price != old_price {
        uow.emit(
            cx,
            PriceChanged {
                product_id: ProductId(id),
                old_price,
                new_price,
            },
        )
        .await?;
    }
    let forget = products.clone();
    uow.on_commit(move || forget.forget(id));
    uow.commit().await?;
    Ok(updated)
}

/// The product `id`, from the cache when it holds it (see [`ProductCache`]).
pub(crate) async fn find(
    outbox: &Outbox,
    products: &ProductCache,
    id: Uuid,
) -> Result<Arc<ProductRow>, Error> {
    products
        .find(outbox.db(), id)
        .await?
        .ok_or(Error::NotFound(id))
}
