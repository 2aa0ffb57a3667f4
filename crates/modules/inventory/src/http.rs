//! The routes of `inventory`, under `/api/v1/inventory`.

use std::sync::Arc;

use banyan_kit::{
    AdminErrors, ApiError, ApiResult, BodyErrors, ErrorBody, ServerErrors,
    auth::Admin,
    extract::{Cx, Json, Path},
    timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    State, domain,
    model::{Error, OnHand},
    store::StockRow,
};

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::BelowReserved { on_hand, reserved } => {
                ApiError::conflict("below_reserved", error.to_string())
                    .with_details(serde_json::json!({ "on_hand": on_hand, "reserved": reserved }))
            }
            Error::NoStock(_) => ApiError::not_found(error.to_string()),
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
    OpenApiRouter::new().routes(routes!(get_stock, set_stock))
}

type AppState = axum::extract::State<Arc<State>>;

/// A product's stock as anyone sees it.
#[derive(Debug, Serialize, ToSchema)]
struct StockView {
    product_id: Uuid,
    /// What is in the warehouse.
    on_hand: i64,
    /// What pending orders hold.
    reserved: i64,
    /// On hand less reserved.
    available: i64,
    /// RFC 3339.
    updated_at: String,
}

impl From<StockRow> for StockView {
    fn from(row: StockRow) -> Self {
        Self {
            product_id: row.product_id(),
            on_hand: row.on_hand,
            reserved: row.reserved,
            available: row.available(),
            updated_at: timestamp(row.updated_at),
        }
    }
}

/// `GET /api/v1/inventory/{product_id}`: public; 404 for a product never stocked.
#[utoipa::path(
    get,
    path = "/api/v1/inventory/{product_id}",
    operation_id = "get_stock",
    summary = "Read a product's stock",
    description = "Public: on hand, reserved and available. 404 for a product never stocked.",
    params(("product_id" = Uuid, Path, description = "The product's id.")),
    responses(
        (status = 200, description = "The stock.", body = StockView),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "The product has no stock record.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn get_stock(
    axum::extract::State(state): AppState,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<StockView>> {
    let row = domain::find(&state.outbox, product_id).await?;
    Ok(Json(row.into()))
}

/// The new count on hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StockChange {
    /// 0 to 10^9, and not below what is reserved.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    on_hand: i64,
}

/// `PUT /api/v1/inventory/{product_id}`: admins only; sets what is on hand, creating the
/// product's stock if missing.
#[utoipa::path(
    put,
    path = "/api/v1/inventory/{product_id}",
    operation_id = "set_stock",
    summary = "Set a product's stock on hand",
    description = "Admins only. Creates the product's stock if missing; announces `StockChanged`.",
    params(("product_id" = Uuid, Path, description = "The product's id.")),
    request_body = StockChange,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stock as set.", body = StockView),
        (status = 400, description = "The id is not a UUID, or the body is not JSON.", body = ErrorBody),
        AdminErrors,
        (status = 409, description = "Below what is reserved (`below_reserved`, with details).", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "`on_hand` missing or out of range, or an unknown field.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn set_stock(
    axum::extract::State(state): AppState,
    _admin: Admin,
    cx: Cx,
    Path(product_id): Path<Uuid>,
    Json(change): Json<StockChange>,
) -> ApiResult<Json<StockView>> {
    let on_hand = OnHand::parse(change.on_hand)?;
    let row = domain::set_on_hand(&state.outbox, &cx, product_id, on_hand).await?;
    Ok(Json(row.into()))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use super::*;
    use crate::test_support::{self, call, with_auth};

    #[tokio::test]
    async fn stock_is_set_by_admins_and_read_by_anyone() {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
        });
        let (router, admin, customer) = with_auth(routes(state));
        let uri = format!("/api/v1/inventory/{}", Uuid::now_v7());
        let (status, _, _) = call(&router, "GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = call(
            &router,
            "PUT",
            &uri,
            Some(&customer),
            Some(json!({ "on_hand": 3 })),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, set) = call(
            &router,
            "PUT",
            &uri,
            Some(&admin),
            Some(json!({ "on_hand": 3 })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{set}");
        assert_eq!(
            (
                set["on_hand"].clone(),
                set["reserved"].clone(),
                set["available"].clone()
            ),
            (json!(3), json!(0), json!(3))
        );
        let (status, _, read) = call(&router, "GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read, set);
    }

    #[tokio::test]
    async fn bad_stock_input_is_answered_with_a_client_error_never_a_server_error() {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
        });
        let (router, admin, _) = with_auth(routes(state));
        let uri = format!("/api/v1/inventory/{}", Uuid::now_v7());
        let cases: Vec<(&str, &str, Option<Value>, StatusCode)> = vec![
            (
                "GET",
                "/api/v1/inventory/nope",
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                "PUT",
                "/api/v1/inventory/nope",
                Some(json!({ "on_hand": 1 })),
                StatusCode::BAD_REQUEST,
            ),
            (
                "PUT",
                &uri,
                Some(json!({ "on_hand": -1 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                &uri,
                Some(json!({ "on_hand": 1_000_000_001 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                &uri,
                Some(json!({ "on_hand": 1.5 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                &uri,
                Some(json!({ "on_hand": "3" })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                &uri,
                Some(json!({ "on_hand": 1, "reserved": 0 })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                &uri,
                Some(json!({})),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (method, uri, body, expected) in cases {
            let (status, _, answer) = call(&router, method, uri, Some(&admin), body).await;
            assert_eq!(status, expected, "{method} {uri}: {answer}");
            assert!(
                answer["error"]["code"].is_string(),
                "{method} {uri}: {answer}"
            );
        }
    }
}
