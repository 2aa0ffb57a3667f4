//! The routes of `users`, under `/api/v1/users`.

use std::sync::Arc;

use axum::{
    http::{StatusCode, header},
    response::IntoResponse,
};
use banyan_kit::{
    AdminErrors, ApiError, ApiResult, AuthErrors, BodyErrors, ErrorBody, Page, Paged, ServerErrors,
    auth::{Caller, Role, Token},
    extract::{ClientIp, Cx, Json, Path, Query},
    timestamp,
};
use banyan_orders_contract::{ListOrders, OrderSummary};
use banyan_users_contract::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    State, domain,
    model::{Error, NewAccount, Password},
    store::{self, UserRow},
};

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::Taken(field) => {
                ApiError::conflict("already_exists", format!("that {field} is already taken"))
            }
            Error::NotFound(id) => not_found(id),
            Error::WrongPassword => {
                ApiError::new(StatusCode::FORBIDDEN, "wrong_password", error.to_string())
            }
            Error::CurrentPasswordNeeded => ApiError::new(
                StatusCode::FORBIDDEN,
                "current_password_required",
                error.to_string(),
            )
            .with_details(serde_json::json!({ "field": "current_password" })),
            Error::LastAdmin => ApiError::conflict("last_admin", error.to_string()),
            Error::Storage(error) => error.into(),
            Error::Busy => ApiError::unavailable(error.to_string()),
            Error::Unexpected(cause) => ApiError::internal(cause),
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
        .routes(routes!(register, list))
        .routes(routes!(login))
        .routes(routes!(get_user, update, delete))
        .routes(routes!(overview))
}

type AppState = axum::extract::State<Arc<State>>;

/// An account as its owner (or an admin) sees it.
#[derive(Debug, Serialize, ToSchema)]
struct UserView {
    id: Uuid,
    username: String,
    email: String,
    /// `customer` or `admin`.
    #[schema(value_type = Role)]
    role: String,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
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
#[utoipa::path(
    post,
    path = "/api/v1/users",
    operation_id = "register_user",
    summary = "Register an account",
    description = "Anyone may register; new accounts are customers.",
    request_body = NewAccount,
    responses(
        (status = 201, description = "Registered.", body = UserView,
            headers(("location" = String, description = "The account's URL."))),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 409, description = "The username or email is already taken (`already_exists`).", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "A field is missing, unknown or invalid (`validation_failed`).", body = ErrorBody),
        ServerErrors,
    )
)]
async fn register(
    axum::extract::State(state): AppState,
    cx: Cx,
    Json(account): Json<NewAccount>,
) -> ApiResult<impl IntoResponse> {
    let user = domain::register(&state.outbox, &state.hasher, &cx, account, Role::Customer).await?;
    let location = format!("/api/v1/users/{}", user.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(UserView::from(user)),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Credentials {
    /// The username or the email address.
    username: String,
    #[schema(value_type = String, format = Password)]
    password: Password,
}

/// A token and whose it is.
#[derive(Debug, Serialize, ToSchema)]
struct LoginAnswer {
    #[serde(flatten)]
    token: Token,
    user_id: Uuid,
    role: Role,
}

/// `POST /api/v1/users/login`: a JWT for good credentials; one 401 for every bad combination,
/// so the answer never says whether the user exists.
#[utoipa::path(
    post,
    path = "/api/v1/users/login",
    operation_id = "login",
    summary = "Log in",
    description = "A JWT for good credentials (the username or the email, and the password); \
        one 401 for every bad combination, so the answer never says whether the user exists. \
        After `modules.users.login_limit` failures for one account or from one address, a 429 \
        until the window passes.",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in.", body = LoginAnswer),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        (status = 401, description = "Invalid username or password.", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many failed logins for this account or from this address (`rate_limited`); try again after `Retry-After`. The same for an account that does not exist.", body = ErrorBody),
        (status = 422, description = "A field is missing or unknown.", body = ErrorBody),
        (status = 500, description = "An unexpected failure.", body = ErrorBody),
        (status = 503, description = "The database or the password hashing is busy; try again after `Retry-After`.", body = ErrorBody),
    )
)]
async fn login(
    axum::extract::State(state): AppState,
    ClientIp(address): ClientIp,
    Json(credentials): Json<Credentials>,
) -> ApiResult<Json<LoginAnswer>> {
    let login = &credentials.username;
    state
        .failed_logins
        .check(login, address)
        .map_err(|seconds| {
            ApiError::too_many_requests(seconds, "too many failed logins; try again later")
        })?;
    let user = store::find_by_login(state.outbox.db(), login).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    if !state.hasher.verify(credentials.password, stored).await? {
        state.failed_logins.failed(login, address);
        return Err(ApiError::unauthorized("invalid username or password"));
    }
    state.failed_logins.succeeded(login);
    let user = user.ok_or_else(|| ApiError::unauthorized("invalid username or password"))?;
    let token = state.auth.issue(user.id(), user.role())?;
    Ok(Json(LoginAnswer {
        token,
        user_id: user.id(),
        role: user.role(),
    }))
}

/// `GET /api/v1/users`: every account, for admins.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    operation_id = "list_users",
    summary = "List accounts",
    description = "Every account, oldest first, a page at a time. Admins only.",
    params(Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of accounts.", body = Paged<UserView>),
        (status = 400, description = "An unknown or unparsable query parameter (`invalid_query`).", body = ErrorBody),
        AdminErrors,
        (status = 422, description = "`page` or `per_page` out of range.", body = ErrorBody),
        ServerErrors,
    )
)]
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

/// `GET /api/v1/users/{id}`: the owner or an admin.
#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    operation_id = "get_user",
    summary = "Read an account",
    description = "The owner or an admin. Someone else's account is answered 404.",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account.", body = UserView),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such account, or not the caller's.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn get_user(
    axum::extract::State(state): AppState,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<UserView>> {
    owned(&caller, id)?;
    let user = domain::find(&state.outbox, id).await?;
    Ok(Json(user.into()))
}

/// The fields of an account change; [`AccountChangesBody`] documents the body as a whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AccountChanges {
    /// As at registration.
    #[schema(
        nullable = false,
        max_length = 254,
        pattern = r"^[^\s@\u0000-\u001F\u007F-\u009F]{1,64}@[^\s@.\u0000-\u001F\u007F-\u009F][^\s@\u0000-\u001F\u007F-\u009F]*\.[^\s@\u0000-\u001F\u007F-\u009F]*[^\s@.\u0000-\u001F\u007F-\u009F]$"
    )]
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    email: Option<String>,
    /// 8 to 128 characters.
    #[schema(value_type = Option<String>, nullable = false, format = Password, min_length = 8, max_length = 128)]
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    password: Option<Password>,
    /// The account's password now: needed when its owner changes the password (an admin
    /// resetting another's does not give it).
    #[schema(value_type = Option<String>, nullable = false, format = Password, min_length = 8, max_length = 128)]
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    current_password: Option<Password>,
}

/// The body of `PUT /api/v1/users/{id}` as the document states it: [`AccountChanges`]' fields,
/// an email or a password among them. A derive cannot say "one of these is required", so this
/// schema is the fields' own, all of it, with an `anyOf` of the two requirements.
struct AccountChangesBody;

impl utoipa::PartialSchema for AccountChangesBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema};
        let needs = |field: &str| ObjectBuilder::new().required(field).build();
        let whole = AllOfBuilder::new()
            .description(Some("An email, a password, or both: at least one of them."))
            .item(<AccountChanges as utoipa::PartialSchema>::schema())
            .item(
                AnyOfBuilder::new()
                    .item(needs("email"))
                    .item(needs("password")),
            )
            .build();
        Schema::AllOf(whole).into()
    }
}

impl ToSchema for AccountChangesBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "AccountChanges".into()
    }
}

/// `PUT /api/v1/users/{id}`: change the email or the password. The role is not a field a
/// client may set.
#[utoipa::path(
    put,
    path = "/api/v1/users/{id}",
    operation_id = "update_user",
    summary = "Change an account's email or password",
    description = "The owner or an admin. The role is not a field a client may set. The owner \
        changing their password gives the current one (`current_password`).",
    params(("id" = Uuid, Path, description = "The user's id.")),
    request_body = AccountChangesBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed account.", body = UserView),
        (status = 400, description = "The id is not a UUID, or the body is not JSON.", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such account, or not the caller's.", body = ErrorBody),
        (status = 403, description = "The owner changing their password gave a wrong current one \
            (`wrong_password`) or none (`current_password_required`).", body = ErrorBody),
        (status = 409, description = "The email is already taken (`already_exists`).", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "Neither field given, an unknown field, or an invalid value.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn update(
    axum::extract::State(state): AppState,
    cx: Cx,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(changes): Json<AccountChanges>,
) -> ApiResult<Json<UserView>> {
    owned(&caller, id)?;
    let changes = domain::Changes {
        email: changes.email,
        password: changes.password,
        // Given, it is held to the document's 8 to 128 characters, needed or not.
        current_password: changes
            .current_password
            .map(Password::parse)
            .transpose()
            .map_err(|invalid| banyan_kit::Invalid::new("current_password", invalid.reason))?,
    };
    let by_owner = caller.user_id == id;
    let user = domain::change(&state.outbox, &state.hasher, &cx, id, by_owner, changes).await?;
    Ok(Json(user.into()))
}

/// `DELETE /api/v1/users/{id}`: the owner or an admin.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    operation_id = "delete_user",
    summary = "Delete an account",
    description = "The owner or an admin.",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 409, description = "The last admin cannot be deleted (`last_admin`).", body = ErrorBody),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such account, or not the caller's.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn delete(
    axum::extract::State(state): AppState,
    cx: Cx,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    owned(&caller, id)?;
    domain::delete(&state.outbox, &cx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An account and its latest orders.
#[derive(Debug, Serialize, ToSchema)]
struct Overview {
    user: UserView,
    /// The latest 20, newest first.
    orders: Vec<OrderSummary>,
    /// True when the orders module did not answer in time: the overview shows the user
    /// without their orders rather than failing.
    orders_unavailable: bool,
}

/// `GET /api/v1/users/{id}/overview`: the account and its latest orders (API composition).
#[utoipa::path(
    get,
    path = "/api/v1/users/{id}/overview",
    operation_id = "user_overview",
    summary = "An account and its latest orders",
    description = "The owner or an admin. Composed from the account and the orders module's \
        answer; `orders_unavailable: true` (and no orders) if orders does not answer in time.",
    params(("id" = Uuid, Path, description = "The user's id.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The overview.", body = Overview),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AuthErrors,
        (status = 404, description = "No such account, or not the caller's.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn overview(
    axum::extract::State(state): AppState,
    caller: Caller,
    cx: Cx,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Overview>> {
    owned(&caller, id)?;
    let user = domain::find(&state.outbox, id).await?;
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

#[cfg(test)]
mod tests {
    use banyan_kit::testing::documented_and_serialized;
    use banyan_message::{Currency, Money};
    use banyan_orders_contract::{OrderId, OrderSummaryLine, ProductId};

    use super::*;

    #[test]
    fn the_documented_order_summary_is_the_contract_types_json() {
        let line = OrderSummaryLine {
            product_id: ProductId::new(),
            name: "Teapot".into(),
            unit_price: Money::new(1999, Currency::EUR),
            quantity: 2,
            line_total: Money::new(3998, Currency::EUR),
        };
        let summary = OrderSummary {
            order_id: OrderId::new(),
            user_id: UserId::new(),
            status: "cancelled".into(),
            cancel_reason: Some("payment_declined".into()),
            lines: vec![line.clone()],
            total: Money::new(3998, Currency::EUR),
            payment_method: "tok_declined".into(),
            from_cart: false,
            created_at: "2026-12-07T08:00:00Z".into(),
            updated_at: "2026-12-07T08:00:01Z".into(),
        };
        let (documented, serialized) = documented_and_serialized(&summary);
        assert_eq!(documented, serialized);
        let (documented, serialized) = documented_and_serialized(&line);
        assert_eq!(documented, serialized);
        assert_eq!(<OrderSummary as ToSchema>::name(), "OrderSummary");
    }
}
