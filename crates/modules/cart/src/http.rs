//! The routes of `cart`, under `/api/v1/carts`.

use std::sync::Arc;

use axum::http::StatusCode;
use banyan_kit::{
    ApiError, ApiResult, AuthErrors, BodyErrors, ErrorBody, ServerErrors,
    auth::Caller,
    extract::{Cx, Json, Path},
    timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    State, domain,
    model::{Error, Quantity},
    store::{self, LineRow},
};

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::NoUser(_) => ApiError::not_found(error.to_string()),
            Error::UnknownProduct(id) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_product", error.to_string())
                    .with_details(serde_json::json!({ "field": "product_id", "product_ids": [id] }))
            }
            Error::Limit { field, ref reason } => {
                let details = serde_json::json!({ "field": field, "reason": reason });
                ApiError::conflict("limit_reached", error.to_string()).with_details(details)
            }
            Error::Catalog(error) => error.into(),
            Error::Storage(error) => error.into(),
        }
    }
}

/// The module's routes, each with its OpenAPI operation.
pub(crate) fn routes(state: Arc<State>) -> OpenApiRouter {
    router().with_state(state)
}

/// The document of the module's routes, without starting it (see `Module::document`).
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    router().into_openapi()
}

/// The routes before their state.
fn router() -> OpenApiRouter<Arc<State>> {
    OpenApiRouter::new()
        .routes(routes!(get_cart))
        .routes(routes!(add_item, clear))
        .routes(routes!(remove_item))
}

type AppState = axum::extract::State<Arc<State>>;

/// A cart as its owner (or an admin) sees it: its lines, oldest first.
#[derive(Debug, Serialize, ToSchema)]
struct CartView {
    user_id: Uuid,
    lines: Vec<CartLineView>,
}

/// One product in a cart.
#[derive(Debug, Serialize, ToSchema)]
struct CartLineView {
    product_id: Uuid,
    /// 1 to 1000.
    quantity: i64,
    /// RFC 3339.
    added_at: String,
}

impl From<LineRow> for CartLineView {
    fn from(row: LineRow) -> Self {
        Self {
            product_id: row.product_id(),
            quantity: row.quantity,
            added_at: timestamp(row.added_at),
        }
    }
}

async fn view(state: &State, user_id: Uuid) -> ApiResult<Json<CartView>> {
    let lines = store::lines(state.outbox.db(), user_id).await?;
    Ok(Json(CartView {
        user_id,
        lines: lines.into_iter().map(CartLineView::from).collect(),
    }))
}

/// Someone else's cart is answered 404, as if it did not exist: its existence is not the
/// caller's business.
fn owned(caller: &Caller, user_id: Uuid) -> ApiResult<()> {
    if caller.may_act_for(user_id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "the cart of user {user_id} does not exist"
        )))
    }
}

/// `GET /api/v1/carts/{user_id}`: the owner or an admin; a cart never filled is empty.
#[utoipa::path(
    get,
    path = "/api/v1/carts/{user_id}",
    operation_id = "get_cart",
    summary = "Read a cart",
    description = "The owner or an admin; a cart never filled is empty. Someone else's cart is \
        answered 404.",
    params(("user_id" = Uuid, Path, description = "The owner's id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart.", body = CartView),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "Not the caller's cart.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn get_cart(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> ApiResult<Json<CartView>> {
    owned(&caller, user_id)?;
    view(&state, user_id).await
}

/// A product to add to the cart.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewItem {
    /// A product in the catalog.
    product_id: Uuid,
    /// 1 to 1000, and the line may not go beyond 1000.
    #[schema(minimum = 1, maximum = 1000)]
    quantity: i64,
}

/// `POST /api/v1/carts/{user_id}/items`: adds to the product's line (creating it); answers
/// the cart.
#[utoipa::path(
    post,
    path = "/api/v1/carts/{user_id}/items",
    operation_id = "add_cart_item",
    summary = "Add a product to a cart",
    description = "The owner or an admin. Adds to the product's line (creating it); the product \
        must be in the catalog, the user an account, a line holds at most 1000 and a cart at \
        most 100 lines.",
    params(("user_id" = Uuid, Path, description = "The owner's id.")),
    request_body = NewItem,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart, with the product added.", body = CartView),
        (status = 400, description = "The id is not a UUID, or the body is not JSON.", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "Not the caller's cart, (an admin's call) no account has that \
            id, or the catalog has no such product (`unknown_product`).", body = ErrorBody),
        (status = 409, description = "The line would go beyond 1000, or the cart holds 100 lines \
            already (`limit_reached`); nothing changed.", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "A quantity out of range, or a body of the wrong shape.", body = ErrorBody),
        (status = 500, description = "An unexpected failure.", body = ErrorBody),
        (status = 503, description = "The database is busy, or the catalog or users is unavailable; try again.", body = ErrorBody),
        (status = 504, description = "The catalog or users did not answer in time.", body = ErrorBody),
    )
)]
async fn add_item(
    axum::extract::State(state): AppState,
    caller: Caller,
    cx: Cx,
    Path(user_id): Path<Uuid>,
    Json(item): Json<NewItem>,
) -> ApiResult<Json<CartView>> {
    owned(&caller, user_id)?;
    let quantity = Quantity::parse(item.quantity)?;
    domain::add_item(
        &state.outbox,
        &state.bus,
        &cx,
        user_id,
        item.product_id,
        quantity,
    )
    .await?;
    view(&state, user_id).await
}

/// `DELETE /api/v1/carts/{user_id}/items/{product_id}`: removes the line; 404 if there is
/// none. Answers the cart.
#[utoipa::path(
    delete,
    path = "/api/v1/carts/{user_id}/items/{product_id}",
    operation_id = "remove_cart_item",
    summary = "Remove a product from a cart",
    description = "The owner or an admin. Removes the product's line; answers the cart.",
    params(
        ("user_id" = Uuid, Path, description = "The owner's id."),
        ("product_id" = Uuid, Path, description = "The product's id."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart, without the product.", body = CartView),
        (status = 400, description = "An id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "Not the caller's cart, or the product is not in it.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn remove_item(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path((user_id, product_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<CartView>> {
    owned(&caller, user_id)?;
    let mut uow = state.outbox.begin().await?;
    if !store::remove(&mut uow, user_id, product_id).await? {
        return Err(ApiError::not_found(format!(
            "product {product_id} is not in the cart"
        )));
    }
    uow.commit().await?;
    view(&state, user_id).await
}

/// `DELETE /api/v1/carts/{user_id}/items`: empties the cart (already empty is fine).
#[utoipa::path(
    delete,
    path = "/api/v1/carts/{user_id}/items",
    operation_id = "clear_cart",
    summary = "Empty a cart",
    description = "The owner or an admin. A cart already empty is fine.",
    params(("user_id" = Uuid, Path, description = "The owner's id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Emptied."),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "Not the caller's cart.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn clear(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(user_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    owned(&caller, user_id)?;
    let mut uow = state.outbox.begin().await?;
    store::clear(&mut uow, user_id).await?;
    uow.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use banyan_catalog_contract::ProductId;
    use banyan_kit::auth::Role;
    use serde_json::{Value, json};

    use super::*;
    use crate::test_support::{call, started, token, with_auth};

    #[tokio::test]
    async fn a_customer_fills_and_empties_their_own_cart() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let (_db, state) = started(&[a, b]).await;
        let (router, auth) = with_auth(routes(state));
        let user = Uuid::now_v7();
        let me = token(&auth, user, Role::Customer);
        let cart = format!("/api/v1/carts/{user}");
        let items = format!("{cart}/items");
        let (status, _, empty) = call(&router, "GET", &cart, Some(&me), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(empty, json!({ "user_id": user, "lines": [] }));
        let body = |product: ProductId, quantity: i64| {
            Some(json!({ "product_id": product, "quantity": quantity }))
        };
        let (status, _, one) = call(&router, "POST", &items, Some(&me), body(a, 2)).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(one["lines"][0]["product_id"], json!(a));
        assert_eq!(one["lines"][0]["quantity"], 2);
        assert!(one["lines"][0]["added_at"].is_string());
        call(&router, "POST", &items, Some(&me), body(b, 1)).await;
        let (_, _, more) = call(&router, "POST", &items, Some(&me), body(a, 3)).await;
        let quantities: Vec<(Value, Value)> = more["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| (line["product_id"].clone(), line["quantity"].clone()))
            .collect();
        assert_eq!(quantities, vec![(json!(a), json!(5)), (json!(b), json!(1))]);
        let line = format!("{items}/{a}");
        let (status, _, after) = call(&router, "DELETE", &line, Some(&me), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(after["lines"].as_array().unwrap().len(), 1);
        let (status, _, gone) = call(&router, "DELETE", &line, Some(&me), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
        let (status, _, _) = call(&router, "DELETE", &items, Some(&me), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, _, cleared) = call(&router, "GET", &cart, Some(&me), None).await;
        assert_eq!(cleared["lines"], json!([]));
    }

    #[tokio::test]
    async fn someone_elses_cart_does_not_exist_for_a_customer_but_does_for_an_admin() {
        let a = ProductId::new();
        let (_db, state) = started(&[a]).await;
        let (router, auth) = with_auth(routes(state));
        let (owner, stranger) = (Uuid::now_v7(), Uuid::now_v7());
        let stranger = token(&auth, stranger, Role::Customer);
        let admin = token(&auth, Uuid::now_v7(), Role::Admin);
        let cart = format!("/api/v1/carts/{owner}");
        let items = format!("{cart}/items");
        let add = Some(json!({ "product_id": a, "quantity": 1 }));
        for (method, uri, body) in [
            ("GET", cart.clone(), None),
            ("POST", items.clone(), add.clone()),
            ("DELETE", format!("{items}/{a}"), None),
            ("DELETE", items.clone(), None),
        ] {
            let (status, _, answer) = call(&router, method, &uri, None, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {answer}");
            let (status, _, answer) =
                call(&router, method, &uri, Some(&stranger), body.clone()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {answer}");
        }
        let (status, _, added) = call(&router, "POST", &items, Some(&admin), add).await;
        assert_eq!(status, StatusCode::OK, "{added}");
        let (status, _, read) = call(&router, "GET", &cart, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["lines"][0]["quantity"], 1);
    }

    #[tokio::test]
    async fn bad_cart_input_is_answered_with_a_client_error_never_a_server_error() {
        let a = ProductId::new();
        let (_db, state) = started(&[a]).await;
        let (router, auth) = with_auth(routes(state));
        let user = Uuid::now_v7();
        let me = token(&auth, user, Role::Customer);
        let items = format!("/api/v1/carts/{user}/items");
        let ghost = ProductId::new();
        let cases: Vec<(&str, String, Option<Value>, StatusCode)> = vec![
            (
                "GET",
                "/api/v1/carts/nope".into(),
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                "DELETE",
                format!("{items}/nope"),
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": a, "quantity": 0 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": a, "quantity": -3 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": a, "quantity": 1001 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": a, "quantity": 1.5 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": a, "quantity": 1e30 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": a, "quantity": u64::MAX })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": "nope", "quantity": 1 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": a, "quantity": 1, "price": 1 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                items.clone(),
                Some(json!({ "product_id": ghost, "quantity": 1 })),
                StatusCode::NOT_FOUND,
            ),
        ];
        for (method, uri, body, expected) in cases {
            let (status, _, answer) = call(&router, method, &uri, Some(&me), body).await;
            assert_eq!(status, expected, "{method} {uri}: {answer}");
            assert!(
                answer["error"]["code"].is_string(),
                "{method} {uri}: {answer}"
            );
        }
        let (_, _, answer) = call(
            &router,
            "POST",
            &items,
            Some(&me),
            Some(json!({ "product_id": ghost, "quantity": 1 })),
        )
        .await;
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&ghost.to_string()), "{message}");
        let (_, _, cart) = call(
            &router,
            "GET",
            &format!("/api/v1/carts/{user}"),
            Some(&me),
            None,
        )
        .await;
        assert_eq!(cart["lines"], json!([]), "nothing bad was added");
    }
}
