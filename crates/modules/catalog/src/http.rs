//! The routes of `catalog`, under `/api/v1/products`.

use std::sync::Arc;

use axum::{
    http::{StatusCode, header},
    response::IntoResponse,
};
use banyan_kit::{
    AdminErrors, ApiError, ApiResult, BodyErrors, ErrorBody, Page, Paged, ServerErrors,
    auth::Admin,
    extract::{Cx, Json, Path, Query},
    timestamp,
};
use banyan_message::Money;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    State, domain,
    model::{Category, Error, NewProduct, ProductChanges},
    store::{self, ProductRow},
};

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::SkuTaken => ApiError::conflict("already_exists", error.to_string()),
            Error::NotFound(_) => ApiError::not_found(error.to_string()),
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
        .routes(routes!(list, create))
        .routes(routes!(get_product, update))
}

type AppState = axum::extract::State<Arc<State>>;

/// A product as anyone sees it.
#[derive(Debug, Serialize, ToSchema)]
struct ProductView {
    id: Uuid,
    sku: String,
    name: String,
    description: String,
    category: String,
    price: Money,
    /// Whether any is available (from inventory's events).
    in_stock: bool,
    /// How many can be ordered: on hand less reserved.
    available: i64,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    updated_at: String,
}

impl From<ProductRow> for ProductView {
    fn from(row: ProductRow) -> Self {
        Self {
            id: row.id(),
            price: row.price(),
            in_stock: row.available > 0,
            available: row.available,
            created_at: timestamp(row.created_at),
            updated_at: timestamp(row.updated_at),
            sku: row.sku,
            name: row.name,
            description: row.description,
            category: row.category,
        }
    }
}

/// `?category=&page=&per_page=`. [`Page`] refuses fields it does not know, so the listing has a
/// query type of its own.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Listing {
    /// Only products of this category: a slug of 1 to 64 characters of `a-z 0-9 -`.
    #[param(min_length = 1, max_length = 64, pattern = "^[a-z0-9-]{1,64}$")]
    category: Option<String>,
    /// The page, from 1 (the default) to 1000000.
    #[param(minimum = 1, maximum = 1_000_000, default = 1)]
    page: Option<u32>,
    /// Items per page, from 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100, default = 20)]
    per_page: Option<u32>,
}

/// `GET /api/v1/products`: public; oldest first, optionally of one category.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    operation_id = "list_products",
    summary = "List products",
    description = "Public. Oldest first, a page at a time, optionally of one category.",
    params(Listing),
    responses(
        (status = 200, description = "A page of products.", body = Paged<ProductView>),
        (status = 400, description = "An unknown or unparsable query parameter (`invalid_query`).", body = ErrorBody),
        (status = 422, description = "`page`, `per_page` or `category` invalid.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn list(
    axum::extract::State(state): AppState,
    Query(listing): Query<Listing>,
) -> ApiResult<axum::response::Response> {
    let defaults = Page::default();
    let page = Page {
        page: listing.page.unwrap_or(defaults.page),
        per_page: listing.per_page.unwrap_or(defaults.per_page),
    }
    .validate()?;
    let category = listing
        .category
        .as_deref()
        .map(Category::parse)
        .transpose()?;
    let key = (
        category.as_ref().map(|c| c.as_str().to_owned()),
        page.page,
        page.per_page,
    );
    let encoded = match state.products.page(&key) {
        Some(encoded) => encoded,
        None => {
            let epoch = state.products.epoch();
            let (rows, total) = store::list(state.outbox.db(), category.as_ref(), page).await?;
            let encoded = serde_json::to_vec(&Paged {
                items: rows.into_iter().map(ProductView::from).collect::<Vec<_>>(),
                page: page.page,
                per_page: page.per_page,
                total,
            })
            .map_err(ApiError::internal)?;
            let encoded: Arc<[u8]> = encoded.into();
            state.products.keep_page(epoch, key, encoded.clone());
            encoded
        }
    };
    let body = axum::body::Bytes::from_owner(encoded);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/products/{id}`: public.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}",
    operation_id = "get_product",
    summary = "Read a product",
    description = "Public; with whether it is in stock.",
    params(("id" = Uuid, Path, description = "The product's id.")),
    responses(
        (status = 200, description = "The product.", body = ProductView),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such product.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn get_product(
    axum::extract::State(state): AppState,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProductView>> {
    let product = domain::find(&state.outbox, &state.products, id).await?;
    Ok(Json(ProductRow::clone(&product).into()))
}

/// `POST /api/v1/products`: admins only.
#[utoipa::path(
    post,
    path = "/api/v1/products",
    operation_id = "create_product",
    summary = "Create a product",
    description = "Admins only. Announces `ProductCreated`.",
    request_body = NewProduct,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created.", body = ProductView,
            headers(("location" = String, description = "The product's URL."))),
        (status = 400, description = "The body is not JSON.", body = ErrorBody),
        AdminErrors,
        (status = 409, description = "The SKU is already taken (`already_exists`).", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "A field is missing, unknown or invalid (`validation_failed`).", body = ErrorBody),
        ServerErrors,
    )
)]
async fn create(
    axum::extract::State(state): AppState,
    _admin: Admin,
    cx: Cx,
    Json(product): Json<NewProduct>,
) -> ApiResult<impl IntoResponse> {
    let product = domain::create(&state.outbox, &state.products, &cx, product).await?;
    let location = format!("/api/v1/products/{}", product.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ProductView::from(product)),
    ))
}

/// `PUT /api/v1/products/{id}`: admins only; any of name, description, category and price.
#[utoipa::path(
    put,
    path = "/api/v1/products/{id}",
    operation_id = "update_product",
    summary = "Change a product",
    description = "Admins only; any of name, description, category and price (a new price \
        announces `PriceChanged`).",
    params(("id" = Uuid, Path, description = "The product's id.")),
    request_body = ProductChanges,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed product.", body = ProductView),
        (status = 400, description = "The id is not a UUID, or the body is not JSON.", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "No such product.", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "No field given, an unknown field, or an invalid value.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn update(
    axum::extract::State(state): AppState,
    _admin: Admin,
    cx: Cx,
    Path(id): Path<Uuid>,
    Json(changes): Json<ProductChanges>,
) -> ApiResult<Json<ProductView>> {
    let product = domain::update(&state.outbox, &state.products, &cx, id, changes).await?;
    Ok(Json(product.into()))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use super::*;
    use crate::test_support::{self, call, with_auth};

    struct App {
        router: axum::Router,
        admin: String,
        customer: String,
        _db: test_support::TestDb,
    }

    async fn app() -> App {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            products: Arc::default(),
        });
        let (router, admin, customer) = with_auth(routes(state));
        App {
            router,
            admin,
            customer,
            _db: db,
        }
    }

    fn teapot(sku: &str) -> Value {
        json!({
            "sku": sku,
            "name": "Teapot",
            "category": "kitchen",
            "price": { "amount_minor": 1999, "currency": "EUR" }
        })
    }

    #[tokio::test]
    async fn an_admin_creates_a_product_that_anyone_can_read() {
        let app = app().await;
        let (status, headers, created) = call(
            &app.router,
            "POST",
            "/api/v1/products",
            Some(&app.admin),
            Some(teapot("T-1")),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let location = headers["location"].to_str().unwrap();
        assert_eq!(
            location,
            format!("/api/v1/products/{}", created["id"].as_str().unwrap())
        );
        assert_eq!(created["description"], "");
        assert_eq!(created["in_stock"], false);
        assert_eq!(created["available"], 0);
        assert_eq!(
            created["price"],
            json!({ "amount_minor": 1999, "currency": "EUR" })
        );
        let (status, _, read) = call(&app.router, "GET", location, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read, created);
    }

    #[tokio::test]
    async fn writes_need_an_admin_and_come_before_any_look_at_the_body() {
        let app = app().await;
        let (status, _, _) = call(
            &app.router,
            "POST",
            "/api/v1/products",
            None,
            Some(teapot("T")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, body) = call(
            &app.router,
            "POST",
            "/api/v1/products",
            Some(&app.customer),
            Some(json!({ "nonsense": true })),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "forbidden");
        let uri = format!("/api/v1/products/{}", Uuid::now_v7());
        let (status, _, _) = call(
            &app.router,
            "PUT",
            &uri,
            Some(&app.customer),
            Some(json!({ "name": "x" })),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn bad_input_is_answered_with_a_client_error_never_a_server_error() {
        let app = app().await;
        let admin = Some(app.admin.as_str());
        let cases: Vec<(&str, String, Option<Value>, StatusCode)> = vec![
            (
                "GET",
                "/api/v1/products/not-a-uuid".into(),
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                format!("/api/v1/products/{}", Uuid::now_v7()),
                None,
                StatusCode::NOT_FOUND,
            ),
            (
                "GET",
                "/api/v1/products?colour=red".into(),
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/products?page=abc".into(),
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/products?page=-1".into(),
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/products?page=0".into(),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "GET",
                "/api/v1/products?per_page=101".into(),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "GET",
                "/api/v1/products?category=Kitchen".into(),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "GET",
                "/api/v1/products?category=".into(),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/products".into(),
                Some(json!({ "sku": "x" })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/products".into(),
                Some(
                    json!({ "sku": "a b", "name": "n", "category": "c", "price": { "amount_minor": 1, "currency": "EUR" } }),
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/products".into(),
                Some(
                    json!({ "sku": "ab", "name": "n", "category": "c", "price": { "amount_minor": -1, "currency": "EUR" } }),
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/products".into(),
                Some(
                    json!({ "sku": "ab", "name": "n", "category": "c", "price": { "amount_minor": 1e30, "currency": "EUR" } }),
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/products".into(),
                Some(
                    json!({ "sku": "ab", "name": "n", "category": "c", "price": { "amount_minor": 1, "currency": "euro" } }),
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                format!("/api/v1/products/{}", Uuid::now_v7()),
                Some(json!({})),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PUT",
                format!("/api/v1/products/{}", Uuid::now_v7()),
                Some(json!({ "name": "n" })),
                StatusCode::NOT_FOUND,
            ),
        ];
        for (method, uri, body, expected) in cases {
            let (status, _, answer) = call(&app.router, method, &uri, admin, body).await;
            assert_eq!(status, expected, "{method} {uri}: {answer}");
            assert!(
                answer["error"]["code"].is_string(),
                "{method} {uri}: {answer}"
            );
        }
    }

    #[tokio::test]
    async fn a_second_product_with_the_same_sku_is_a_conflict() {
        let app = app().await;
        let admin = Some(app.admin.as_str());
        let (status, _, _) = call(
            &app.router,
            "POST",
            "/api/v1/products",
            admin,
            Some(teapot("DUP")),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _, body) = call(
            &app.router,
            "POST",
            "/api/v1/products",
            admin,
            Some(teapot("DUP")),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "already_exists");
    }

    #[tokio::test]
    async fn products_are_listed_by_page_and_category_and_changed_by_admins() {
        let app = app().await;
        let admin = Some(app.admin.as_str());
        for (sku, category) in [("A", "kitchen"), ("B", "garden"), ("C", "kitchen")] {
            let mut product = teapot(sku);
            product["category"] = json!(category);
            call(
                &app.router,
                "POST",
                "/api/v1/products",
                admin,
                Some(product),
            )
            .await;
        }
        let (status, _, page) = call(
            &app.router,
            "GET",
            "/api/v1/products?category=kitchen&per_page=1&page=2",
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], 2);
        assert_eq!(page["page"], 2);
        assert_eq!(page["items"][0]["sku"], "C");
        let (_, _, past) = call(
            &app.router,
            "GET",
            "/api/v1/products?category=kitchen&per_page=1&page=9",
            None,
            None,
        )
        .await;
        assert_eq!(past["items"], json!([]));
        assert_eq!(
            past["total"], 2,
            "a page past the end still counts the match"
        );
        let id = page["items"][0]["id"].as_str().unwrap().to_owned();
        // Read once before the change: the product is cached now, and the change must still
        // show at once.
        let (_, _, before) = call(
            &app.router,
            "GET",
            &format!("/api/v1/products/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(before["price"]["amount_minor"], 1999);
        let (status, _, changed) = call(
            &app.router,
            "PUT",
            &format!("/api/v1/products/{id}"),
            admin,
            Some(json!({ "price": { "amount_minor": 2500, "currency": "EUR" }, "description": "Holds tea." })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert_eq!(changed["price"]["amount_minor"], 2500);
        assert_eq!(changed["name"], "Teapot");
        assert_eq!(changed["description"], "Holds tea.");
        let (_, _, after) = call(
            &app.router,
            "GET",
            &format!("/api/v1/products/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(
            after["price"]["amount_minor"], 2500,
            "a cached read missed the change"
        );
        assert_eq!(after["description"], "Holds tea.");
        let (_, _, all) = call(&app.router, "GET", "/api/v1/products", None, None).await;
        assert_eq!(all["total"], 3);
        assert_eq!(all["per_page"], 20);
    }
}
