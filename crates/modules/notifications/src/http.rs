//! The routes of `notifications`, under `/api/v1/notifications`.

use std::sync::Arc;

use banyan_kit::{
    ApiError, ApiResult, AuthErrors, ErrorBody, Page, Paged, ServerErrors,
    auth::Caller,
    extract::{Json, Query},
    timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    State,
    store::{self, NotificationRow},
};

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
    OpenApiRouter::new().routes(routes!(list))
}

type AppState = axum::extract::State<Arc<State>>;

/// A notification as its recipient (or an admin) sees it.
#[derive(Debug, Serialize, ToSchema)]
struct NotificationView {
    id: Uuid,
    user_id: Uuid,
    /// `welcome`, `order_confirmed` or `order_cancelled`.
    kind: String,
    subject: String,
    body: String,
    /// RFC 3339.
    sent_at: String,
}

impl From<NotificationRow> for NotificationView {
    fn from(row: NotificationRow) -> Self {
        Self {
            id: row.id(),
            user_id: row.user_id(),
            sent_at: timestamp(row.sent_at),
            kind: row.kind,
            subject: row.subject,
            body: row.body,
        }
    }
}

/// `?user_id=&page=&per_page=`. [`Page`] refuses fields it does not know, so the listing has a
/// query type of its own.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Listing {
    /// Whose notifications; the caller's own by default.
    user_id: Option<Uuid>,
    /// The page, from 1 (the default) to 1000000.
    #[param(minimum = 1, maximum = 1_000_000, default = 1)]
    page: Option<u32>,
    /// Items per page, from 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100, default = 20)]
    per_page: Option<u32>,
}

/// `GET /api/v1/notifications`: a user's notifications, newest first, for that user or an
/// admin; without `user_id`, the caller's own. Someone else's are answered 404, as if they
/// did not exist.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    operation_id = "list_notifications",
    summary = "List a user's notifications",
    description = "The notifications sent to a user (welcome, order confirmation, cancellation), \
        newest first, for that user or an admin; without `user_id`, the caller's own. Someone \
        else's are answered 404.",
    params(Listing),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of notifications.", body = Paged<NotificationView>),
        (status = 400, description = "An unknown or unparsable query parameter (`invalid_query`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "Not the caller's notifications.", body = ErrorBody),
        (status = 422, description = "`page` or `per_page` out of range.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn list(
    axum::extract::State(state): AppState,
    caller: Caller,
    Query(listing): Query<Listing>,
) -> ApiResult<Json<Paged<NotificationView>>> {
    let user_id = listing.user_id.unwrap_or(caller.user_id);
    if !caller.may_act_for(user_id) {
        return Err(ApiError::not_found(format!(
            "the notifications of user {user_id} do not exist"
        )));
    }
    let defaults = Page::default();
    let page = Page {
        page: listing.page.unwrap_or(defaults.page),
        per_page: listing.per_page.unwrap_or(defaults.per_page),
    }
    .validate()?;
    let db = state.outbox.db();
    let (rows, total) = tokio::try_join!(
        store::list(db, user_id, page.limit(), page.offset()),
        store::count(db, user_id),
    )?;
    Ok(Json(Paged {
        items: rows.into_iter().map(NotificationView::from).collect(),
        page: page.page,
        per_page: page.per_page,
        total,
    }))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use banyan_kit::auth::Role;
    use banyan_notifications_contract::UserId;
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        messages::tests::{deliver, registered, started},
        test_support::{call, token, with_auth},
    };

    #[tokio::test]
    async fn a_user_reads_their_own_notifications_and_an_admin_anyones() {
        let (db, state, _) = started(None).await;
        let (router, auth) = with_auth(routes(state));
        let (alice, bob) = (UserId::new(), UserId::new());
        deliver(&db, &registered(alice, "alice"), None).await;
        deliver(&db, &registered(bob, "bob"), None).await;
        let me = token(&auth, alice.0, Role::Customer);
        let admin = token(&auth, Uuid::now_v7(), Role::Admin);
        let (status, _, own) = call(&router, "GET", "/api/v1/notifications", Some(&me), None).await;
        assert_eq!(status, StatusCode::OK, "{own}");
        assert_eq!(own["total"], 1);
        assert_eq!(
            (own["page"].clone(), own["per_page"].clone()),
            (json!(1), json!(20))
        );
        let item = &own["items"][0];
        assert_eq!(item["user_id"], json!(alice));
        assert_eq!(item["kind"], "welcome");
        assert!(item["subject"].as_str().unwrap().contains("alice"));
        assert!(item["body"].is_string() && item["sent_at"].is_string() && item["id"].is_string());
        let mine = format!("/api/v1/notifications?user_id={alice}");
        let (_, _, same) = call(&router, "GET", &mine, Some(&me), None).await;
        assert_eq!(same, own);
        let theirs = format!("/api/v1/notifications?user_id={bob}&page=1&per_page=5");
        let (status, _, hidden) = call(&router, "GET", &theirs, Some(&me), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{hidden}");
        let (status, _, seen) = call(&router, "GET", &theirs, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seen["items"][0]["user_id"], json!(bob));
        assert_eq!(seen["per_page"], 5);
        let (status, _, later) =
            call(&router, "GET", &format!("{mine}&page=2"), Some(&me), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (later["items"].clone(), later["total"].clone()),
            (json!([]), json!(1))
        );
    }

    #[tokio::test]
    async fn bad_listing_input_is_answered_with_a_client_error_never_a_server_error() {
        let (_db, state, _) = started(None).await;
        let (router, auth) = with_auth(routes(state));
        let me = token(&auth, Uuid::now_v7(), Role::Customer);
        let (status, _, answer) = call(&router, "GET", "/api/v1/notifications", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        let cases: Vec<(&str, StatusCode)> = vec![
            (
                "/api/v1/notifications?user_id=nope",
                StatusCode::BAD_REQUEST,
            ),
            ("/api/v1/notifications?page=abc", StatusCode::BAD_REQUEST),
            ("/api/v1/notifications?page=-1", StatusCode::BAD_REQUEST),
            ("/api/v1/notifications?sort=asc", StatusCode::BAD_REQUEST),
            (
                "/api/v1/notifications?page=0",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "/api/v1/notifications?per_page=0",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "/api/v1/notifications?per_page=101",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (uri, expected) in cases {
            let (status, _, answer): (_, _, Value) =
                call(&router, "GET", uri, Some(&me), None).await;
            assert_eq!(status, expected, "{uri}: {answer}");
            assert!(answer["error"]["code"].is_string(), "{uri}: {answer}");
        }
    }
}
