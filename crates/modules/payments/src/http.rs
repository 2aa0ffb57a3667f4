//! The route of `payments`, under `/api/v1/payments`.

use std::sync::Arc;

use banyan_kit::{
    ApiError, ApiResult, AuthErrors, ErrorBody, ServerErrors,
    auth::Caller,
    extract::{Json, Path},
    timestamp,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{State, domain, model::Error, store::PaymentRow};

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::NoPayment(_) => ApiError::not_found(error.to_string()),
            Error::Storage(error) => error.into(),
            Error::Corrupt(cause) => ApiError::internal(cause),
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
    OpenApiRouter::new().routes(routes!(get_payment))
}

type AppState = axum::extract::State<Arc<State>>;

/// An amount as the API shows it (the shape of `Money`).
#[derive(Debug, Serialize, ToSchema)]
struct AmountView {
    /// Integer minor units (cents for EUR).
    amount_minor: i64,
    /// An ISO 4217 currency code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
}

/// A payment as its payer (or an admin) sees it.
#[derive(Debug, Serialize, ToSchema)]
struct PaymentBody {
    id: Uuid,
    order_id: Uuid,
    user_id: Uuid,
    amount: AmountView,
    /// `completed` or `failed`.
    status: String,
    /// `payment_declined`, `payment_over_limit` or `payment_failed`; `null` when completed.
    failure_reason: Option<String>,
    /// RFC 3339.
    created_at: String,
}

impl From<PaymentRow> for PaymentBody {
    fn from(row: PaymentRow) -> Self {
        Self {
            id: row.id(),
            order_id: row.order_id(),
            user_id: row.user_id(),
            amount: AmountView {
                amount_minor: row.amount_minor,
                currency: row.currency,
            },
            status: row.status,
            failure_reason: row.failure_reason,
            created_at: timestamp(row.created_at),
        }
    }
}

/// `GET /api/v1/payments/{order_id}`: the payer or an admin. Another user's payment answers
/// 404, as does an order without one, so that existence does not leak.
#[utoipa::path(
    get,
    path = "/api/v1/payments/{order_id}",
    operation_id = "get_payment",
    summary = "Read an order's payment",
    description = "The payer or an admin. Another user's payment answers 404, as does an order \
        without one, so that existence does not leak.",
    params(("order_id" = Uuid, Path, description = "The order's id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment.", body = PaymentBody),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No payment for that order, or not the caller's.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn get_payment(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(order_id): Path<Uuid>,
) -> ApiResult<Json<PaymentBody>> {
    // Someone else's payment is answered as if there were none.
    let row = match domain::payment_of(&state.outbox, order_id).await? {
        (row, _) if caller.may_act_for(row.user_id()) => row,
        _ => return Err(Error::NoPayment(order_id).into()),
    };
    Ok(Json(row.into()))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use banyan_bus::Context;
    use banyan_kit::auth::Role;
    use banyan_message::{Currency, Money};
    use serde_json::json;

    use super::*;
    use crate::{
        domain,
        model::{Intent, Provider},
        test_support::{self, call, token, with_auth},
    };

    #[tokio::test]
    async fn a_payment_is_shown_to_its_payer_and_admins_and_to_no_one_else() {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            provider: Provider::default(),
        });
        let (router, auth) = with_auth(routes(state.clone()));
        let (payer, order_id) = (Uuid::now_v7(), Uuid::now_v7());
        let intent = Intent {
            order_id,
            user_id: payer,
            amount: Money::new(1_999, Currency::EUR),
            payment_method: "tok_declined".into(),
        };
        let mut uow = db.outbox.begin().await.unwrap();
        domain::charge(&mut uow, &Context::root(), &state.provider, &intent)
            .await
            .unwrap()
            .unwrap();
        uow.commit().await.unwrap();
        let uri = format!("/api/v1/payments/{order_id}");

        let (status, _, body) = call(
            &router,
            "GET",
            &uri,
            Some(&token(&auth, payer, Role::Customer)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["id"].is_string());
        assert!(body["created_at"].is_string());
        let mut shown = body.clone();
        for key in ["id", "created_at"] {
            shown.as_object_mut().unwrap().remove(key);
        }
        assert_eq!(
            shown,
            json!({
                "order_id": order_id,
                "user_id": payer,
                "amount": { "amount_minor": 1_999, "currency": "EUR" },
                "status": "failed",
                "failure_reason": "payment_declined",
            })
        );
        let admin = token(&auth, Uuid::now_v7(), Role::Admin);
        let (status, _, as_admin) = call(&router, "GET", &uri, Some(&admin), None).await;
        assert_eq!((status, as_admin), (StatusCode::OK, body));

        let stranger = token(&auth, Uuid::now_v7(), Role::Customer);
        let (status, _, answer) = call(&router, "GET", &uri, Some(&stranger), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(answer["error"]["code"], "not_found");
        let unknown = format!("/api/v1/payments/{}", Uuid::now_v7());
        let (status, _, _) = call(&router, "GET", &unknown, Some(&admin), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_request_without_a_token_or_with_a_bad_id_is_a_client_error() {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            provider: Provider::default(),
        });
        let (router, auth) = with_auth(routes(state));
        let uri = format!("/api/v1/payments/{}", Uuid::now_v7());
        let (status, _, answer) = call(&router, "GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(answer["error"]["code"].is_string());
        let admin = token(&auth, Uuid::now_v7(), Role::Admin);
        for bad in ["/api/v1/payments/nope", "/api/v1/payments/123"] {
            let (status, _, answer) = call(&router, "GET", bad, Some(&admin), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
            assert!(answer["error"]["code"].is_string());
        }
    }
}
