//! The routes of `users`, under `/api/v1/users`.

use std::sync::Arc;

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use banyan_kit::{
    ApiError, ApiResult, Page, Paged,
    auth::{Caller, Role, Token},
    extract::{Cx, Json, Path, Query},
    timestamp,
};
use banyan_orders_contract::{ListOrders, OrderSummary};
use banyan_users_contract::UserId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    State,
    domain::{self, Email, NewAccount, Password},
    store::{self, UserRow},
};

pub(crate) fn routes(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/v1/users", post(register).get(list))
        .route("/api/v1/users/login", post(login))
        .route(
            "/api/v1/users/{id}",
            get(get_user).put(update).delete(delete),
        )
        .route("/api/v1/users/{id}/overview", get(overview))
        .with_state(state)
}

type AppState = axum::extract::State<Arc<State>>;

/// An account as its owner (or an admin) sees it.
#[derive(Debug, Serialize)]
struct UserView {
    id: Uuid,
    username: String,
    email: String,
    role: String,
    created_at: String,
    updated_at: String,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id(),
            username: row.username,
            email: row.email,
            role: row.role,
            created_at: timestamp(row.created_at),
            updated_at: timestamp(row.updated_at),
        }
    }
}

/// `POST /api/v1/users`: anyone may register; new accounts are customers.
async fn register(
    axum::extract::State(state): AppState,
    cx: Cx,
    Json(account): Json<NewAccount>,
) -> ApiResult<impl IntoResponse> {
    let user = domain::register(&state.outbox, &cx, account, Role::Customer).await?;
    let location = format!("/api/v1/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(UserView::from(user)),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    /// The username or the email address.
    username: String,
    password: Password,
}

#[derive(Debug, Serialize)]
struct LoginAnswer {
    #[serde(flatten)]
    token: Token,
    user_id: Uuid,
    role: Role,
}

/// `POST /api/v1/users/login`: a JWT for good credentials; one 401 for every bad combination,
/// so the answer never says whether the user exists.
async fn login(
    axum::extract::State(state): AppState,
    Json(credentials): Json<Credentials>,
) -> ApiResult<Json<LoginAnswer>> {
    let user = store::find_by_login(state.outbox.db(), &credentials.username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    if !credentials.password.verify(stored).await {
        return Err(ApiError::unauthorized("invalid username or password"));
    }
    let user = user.ok_or_else(|| ApiError::unauthorized("invalid username or password"))?;
    let token = state.auth.issue(user.id(), user.role())?;
    Ok(Json(LoginAnswer {
        token,
        user_id: user.id(),
        role: user.role(),
    }))
}

/// `GET /api/v1/users`: every account, for admins.
async fn list(
    axum::extract::State(state): AppState,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<Paged<UserView>>> {
    caller.require_admin()?;
    let page = page.validate()?;
    let (rows, total) = store::list(state.outbox.db(), page).await?;
    Ok(Json(Paged {
        items: rows.into_iter().map(UserView::from).collect(),
        page: page.page,
        per_page: page.per_page,
        total,
    }))
}

/// Someone else's account is answered 404, as if it did not exist: its existence is not the
/// caller's business.
fn owned(caller: &Caller, id: Uuid) -> ApiResult<()> {
    if caller.may_act_for(id) {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(format!("user {id} does not exist"))
}

async fn get_user(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<UserView>> {
    owned(&caller, id)?;
    let user = store::find(state.outbox.db(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(user.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountChanges {
    email: Option<String>,
    password: Option<Password>,
}

/// `PUT /api/v1/users/{id}`: change the email or the password. The role is not a field a
/// client may set.
async fn update(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(changes): Json<AccountChanges>,
) -> ApiResult<Json<UserView>> {
    owned(&caller, id)?;
    if changes.email.is_none() && changes.password.is_none() {
        return Err(ApiError::invalid(
            "body",
            "give an email, a password, or both",
        ));
    }
    let email = changes.email.as_deref().map(Email::parse).transpose()?;
    let hash = match changes.password {
        Some(password) => Some(Password::parse(password)?.hash().await?),
        None => None,
    };
    let mut uow = state.outbox.begin().await?;
    if let Some(email) = &email
        && store::email_taken(&mut uow, email, id).await?
    {
        return Err(ApiError::conflict(
            "already_exists",
            "that email is already taken",
        ));
    }
    let user = store::update(&mut uow, id, email.as_ref(), hash.as_deref())
        .await
        .map_err(domain::conflict_or_internal)?
        .ok_or_else(|| not_found(id))?;
    uow.commit().await.map_err(domain::conflict_or_internal)?;
    Ok(Json(user.into()))
}

async fn delete(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    owned(&caller, id)?;
    let mut uow = state.outbox.begin().await?;
    if !store::delete(&mut uow, id).await? {
        return Err(not_found(id));
    }
    uow.commit().await?;
    tracing::info!(user_id = %id, "Account deleted.");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct Overview {
    user: UserView,
    orders: Vec<OrderSummary>,
    /// True when the orders module did not answer in time: the overview shows the user
    /// without their orders rather than failing.
    orders_unavailable: bool,
}

/// `GET /api/v1/users/{id}/overview`: the account and its latest orders (API composition).
async fn overview(
    axum::extract::State(state): AppState,
    caller: Caller,
    cx: Cx,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Overview>> {
    owned(&caller, id)?;
    let user = store::find(state.outbox.db(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let asked = ListOrders {
        user_id: UserId(id),
        limit: 20,
    };
    let (orders, orders_unavailable) = match state
        .bus
        .request_within(&cx, asked, state.overview_timeout)
        .await
    {
        Ok(orders) => (orders, false),
        Err(error) => {
            tracing::warn!(%error, "Orders did not answer; the overview goes without them.");
            (Vec::new(), true)
        }
    };
    Ok(Json(Overview {
        user: user.into(),
        orders,
        orders_unavailable,
    }))
}
