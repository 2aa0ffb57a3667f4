//! What `catalog` answers on the bus, and what it listens to.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use banyan_bus::{Context, Delivered, HandlerError, ModuleBus, Rejection};
use banyan_catalog_contract::{GetProducts, ProductId, ProductSnapshot};
use banyan_inventory_contract::StockChanged;
use serde_json::json;
use uuid::Uuid;

use crate::{State, model::Error, store};

pub(crate) fn register(bus: &ModuleBus, state: &Arc<State>) {
    bus.handle(state, get_products);
    bus.subscribe(state, on_stock_changed);
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::SkuTaken => Rejection::conflict("already_exists", error.to_string()),
            Error::NotFound(id) => Rejection::not_found("product", id),
            Error::Storage(error) => Rejection::internal(error),
        }
    }
}

async fn get_products(
    state: Arc<State>,
    _cx: Context,
    request: GetProducts,
) -> Result<Vec<ProductSnapshot>, Rejection> {
    if request.product_ids.len() > GetProducts::MAX_IDS {
        let reason = format!("at most {} ids per request", GetProducts::MAX_IDS);
        return Err(
            Rejection::new("validation_failed", format!("product_ids: {reason}"))
                .with_details(json!({ "field": "product_ids", "reason": reason })),
        );
    }
    let unique: Vec<Uuid> = request
        .product_ids
        .iter()
        .map(|id| id.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let found: HashMap<Uuid, Arc<store::ProductRow>> = state
        .products
        .find_many(state.outbox.db(), &unique)
        .await
        .map_err(Rejection::internal)?
        .into_iter()
        .map(|row| (row.id(), row))
        .collect();
    let mut unknown: Vec<ProductId> = Vec::new();
    for id in &request.product_ids {
        if !found.contains_key(&id.0) && !unknown.contains(id) {
            unknown.push(*id);
        }
    }
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        return Err(Rejection::new(
            "unknown_product",
            format!("unknown product ids: {}", listed.join(", ")),
        )
        .with_details(json!({ "product_ids": unknown })));
    }
    Ok(request
        .product_ids
        .iter()
        .filter_map(|id| found.get(&id.0))
        .map(|row| ProductSnapshot {
            product_id: ProductId(row.id()),
            sku: row.sku.clone(),
            name: row.name.clone(),
            category: row.category.clone(),
            price: row.price(),
        })
        .collect())
}

/// Keeps the availability shown with each product. Idempotent (inbox) and order-proof: a
/// stale event (a version not newer than the last applied) changes nothing. An event for a
/// product this module does not have is recorded as handled and otherwise ignored.
async fn on_stock_changed(
    state: Arc<State>,
    delivered: Delivered<StockChanged>,
) -> Result<(), HandlerError> {
    let Some(mut uow) = state.outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    let product_id = delivered.product_id.0;
    let applied =
        store::apply_stock(&mut uow, product_id, delivered.available, delivered.version).await?;
    if applied {
        let products = state.products.clone();
        uow.on_commit(move || products.forget(product_id));
    }
    uow.commit().await?;
    if !applied {
        tracing::debug!(
            product_id = %delivered.product_id,
            version = delivered.version,
            "Stock change ignored: unknown product or stale version."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use banyan_bus::{BusError, Context, Message};
    use banyan_message::{Currency, Money};

    use super::*;
    use crate::{
        domain,
        model::NewProduct,
        test_support::{self, TestDb},
    };

    fn teapot(sku: &str) -> NewProduct {
        NewProduct {
            sku: sku.into(),
            name: "Teapot".into(),
            description: None,
            category: "kitchen".into(),
            price: Money::new(1999, Currency::EUR),
        }
    }

    /// A catalog database with the module's handlers on its bus.
    async fn started() -> (TestDb, Arc<State>) {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            products: Arc::default(),
        });
        register(&db.module_bus(), &state);
        (db, state)
    }

    async fn create(state: &State, sku: &str) -> ProductId {
        let row = domain::create(
            &state.outbox,
            &state.products,
            &Context::root(),
            teapot(sku),
        )
        .await
        .unwrap();
        ProductId(row.id())
    }

    /// Delivers `event` as the bus would, with a fresh message id unless `again` is given.
    async fn deliver(db: &TestDb, event: &StockChanged, again: Option<&banyan_bus::Envelope>) {
        let envelope = again
            .cloned()
            .unwrap_or_else(|| Context::root().envelope(StockChanged::SUBJECT));
        let json = serde_json::to_string(event).unwrap();
        db.bus
            .inbound("nats")
            .deliver_remote_event(envelope, json.into(), event.product_id.0)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn products_are_answered_in_the_order_asked_and_unknown_ids_are_named() {
        let (db, state) = started().await;
        let (a, b) = (create(&state, "A").await, create(&state, "B").await);
        let cx = Context::root();
        let answer = db
            .bus
            .request(
                &cx,
                GetProducts {
                    product_ids: vec![b, a, b],
                },
            )
            .await
            .unwrap();
        let ids: Vec<ProductId> = answer.iter().map(|p| p.product_id).collect();
        assert_eq!(ids, vec![b, a, b]);
        assert_eq!(answer[1].price, Money::new(1999, Currency::EUR));
        let ghost = ProductId::new();
        let asked = GetProducts {
            product_ids: vec![a, ghost, ghost],
        };
        let Err(BusError::Rejected(rejection)) = db.bus.request(&cx, asked).await else {
            panic!("an unknown product must be rejected");
        };
        assert_eq!(rejection.code, "unknown_product");
        assert_eq!(rejection.details, json!({ "product_ids": [ghost] }));
    }

    #[tokio::test]
    async fn stock_changes_apply_once_and_never_go_back_to_an_older_version() {
        let (db, state) = started().await;
        let id = create(&state, "T").await;
        let change = |available, version| StockChanged {
            product_id: id,
            on_hand: available,
            reserved: 0,
            available,
            version,
        };
        // Through the read cache, as the routes and `GetProducts` read: the first read fills
        // it, and each applied change must reach the next read at once.
        let available = || async {
            state
                .products
                .find(state.outbox.db(), id.0)
                .await
                .unwrap()
                .unwrap()
                .available
        };
        deliver(&db, &change(5, 2), None).await;
        assert_eq!(available().await, 5);
        deliver(&db, &change(9, 1), None).await;
        assert_eq!(available().await, 5, "a stale version is ignored");
        let envelope = Context::root().envelope(StockChanged::SUBJECT);
        deliver(&db, &change(0, 3), Some(&envelope)).await;
        assert_eq!(available().await, 0);
        // The same message again, even with a newer version inside, is not applied twice.
        deliver(&db, &change(7, 4), Some(&envelope)).await;
        assert_eq!(available().await, 0);
        // A product the catalog does not have is ignored without failing.
        let unknown = StockChanged {
            product_id: ProductId::new(),
            ..change(1, 1)
        };
        deliver(&db, &unknown, None).await;
    }
}
