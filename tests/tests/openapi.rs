#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
//! The OpenAPI document at `GET /api-docs/openapi.json`: valid OpenAPI 3, and in step with the
//! router (every documented route is served, every module is documented).
//!
//! The modules build their routers from their handlers' `#[utoipa::path]` attributes, so a
//! route cannot be served without being documented; these tests check the other direction and
//! the document's own consistency.

use std::collections::{BTreeMap, BTreeSet};

use banyan_e2e::{Engine, Reply, TestApp, banyan_app::config, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DOCUMENT: &str = "/api-docs/openapi.json";

const MODULES: [&str; 7] = [
    "users",
    "catalog",
    "inventory",
    "cart",
    "orders",
    "payments",
    "notifications",
];

/// The HTTP methods an OpenAPI path item may hold, as its keys.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One documented operation.
struct Operation<'d> {
    method: &'static str,
    path: &'d str,
    item: &'d Value,
    operation: &'d Value,
}

impl std::fmt::Display for Operation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method.to_uppercase(), self.path)
    }
}

fn operations(document: &Value) -> Vec<Operation<'_>> {
    let paths = document["paths"].as_object().expect("a paths object");
    let mut found = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push(Operation {
                    method,
                    path,
                    item,
                    operation,
                });
            }
        }
    }
    found
}

async fn fetch_document(app: &TestApp) -> Reply {
    let reply = app.get(DOCUMENT, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let content_type = reply.headers[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(reply.body.is_object(), "{}", reply.text);
    reply
}

/// Follows a local reference (`#/a/b~1c`) inside the document.
fn resolve<'d>(document: &'d Value, reference: &str) -> Option<&'d Value> {
    document.pointer(reference.strip_prefix('#')?)
}

/// A value, or what it refers to when it is a `$ref`.
fn dereferenced<'d>(document: &'d Value, value: &'d Value) -> &'d Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            resolve(document, reference).unwrap_or_else(|| panic!("{reference} does not resolve"))
        }
        None => value,
    }
}

/// Every `$ref` anywhere in `value`, with where it was found.
fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref"
                    && let Some(reference) = inner.as_str()
                {
                    found.push((at.to_owned(), reference.to_owned()));
                }
                references(inner, &format!("{at}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                references(inner, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// The `{name}`s of a path template.
fn template_parameters(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// The parameters of an operation, its path item's included, `$ref`s followed.
fn parameters<'d>(document: &'d Value, operation: &Operation<'d>) -> Vec<&'d Value> {
    [operation.item, operation.operation]
        .into_iter()
        .filter_map(|holder| holder.get("parameters").and_then(Value::as_array))
        .flatten()
        .map(|parameter| dereferenced(document, parameter))
        .collect()
}

/// The property names a schema declares and those it requires, through `$ref`s and `allOf`.
fn declared_properties(
    document: &Value,
    schema: &Value,
    properties: &mut BTreeSet<String>,
    required: &mut BTreeSet<String>,
) {
    let schema = dereferenced(document, schema);
    if let Some(own) = schema.get("properties").and_then(Value::as_object) {
        properties.extend(own.keys().cloned());
    }
    if let Some(own) = schema.get("required").and_then(Value::as_array) {
        required.extend(own.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        declared_properties(document, part, properties, required);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_openapi_3() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let reply = fetch_document(&app).await;
    let document = &reply.body;

    // A real parser of OpenAPI 3.1 (the version utoipa emits) reads it, and its checks pass.
    let spec = oas3::from_json(&reply.text).unwrap_or_else(|e| panic!("not OpenAPI 3.1: {e}"));
    let version = spec.validate_version().unwrap();
    assert_eq!(version.major, 3);
    let parsed: Vec<_> = spec.operations().collect();
    assert_eq!(parsed.len(), operations(document).len());
    for (path, method, operation) in &parsed {
        operation
            .parameters(&spec)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    }

    // And, structurally:
    let openapi = document["openapi"].as_str().unwrap();
    assert!(openapi.starts_with("3."), "{openapi}");
    assert_eq!(document["info"]["title"], "Banyan");
    assert!(
        !document["info"]["version"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    let declared_tags: BTreeSet<&str> = document["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|tag| tag["name"].as_str())
        .collect();
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["bearer"]["bearerFormat"], "JWT");

    let all = operations(document);
    assert!(!all.is_empty());

    // The shared error responses (kit's `ServerErrors`, `BodyErrors`) land in each operation.
    let create = &document["paths"]["/api/v1/products"]["post"]["responses"];
    for status in ["400", "413", "415", "422", "500", "503"] {
        let body = &create[status]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(
            body, "#/components/schemas/ErrorBody",
            "POST /api/v1/products {status}: {create}"
        );
    }
    assert_eq!(
        create["503"]["description"],
        "The database is busy; try again."
    );
    let mut operation_ids = BTreeSet::new();
    for op in &all {
        let operation = op.operation;
        let responses = operation["responses"].as_object();
        assert!(
            responses.is_some_and(|r| !r.is_empty()),
            "{op} has no response"
        );
        let tags = operation["tags"].as_array();
        assert!(tags.is_some_and(|t| !t.is_empty()), "{op} has no tag");
        for tag in tags.into_iter().flatten() {
            let tag = tag.as_str().unwrap();
            assert!(declared_tags.contains(tag), "{op}: undeclared tag {tag}");
        }
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{op} has no operationId");
        assert!(operation_ids.insert(id), "{op}: operationId {id} twice");
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(scheme), "{op}: no scheme {scheme}");
            }
        }
        // Every client error answers the one error body.
        for (status, response) in responses.unwrap() {
            if status.starts_with('4') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{op} {status}"
                );
            }
        }

        // Path parameters: each `{x}` of the path is a required `path` parameter, and each
        // `path` parameter is in the path.
        let in_template = template_parameters(op.path);
        let declared: BTreeSet<String> = parameters(document, op)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{op}: path parameters are required");
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(in_template, declared, "{op}: path parameters");
    }

    // Every `$ref` resolves inside the document.
    let mut found = Vec::new();
    references(document, "#", &mut found);
    assert!(!found.is_empty());
    for (at, reference) in found {
        assert!(
            reference.starts_with("#/"),
            "{at}: {reference} is not local"
        );
        assert!(
            resolve(document, &reference).is_some(),
            "{at}: {reference} does not resolve"
        );
    }
    app.stop().await;
}

/// Whether a reply is the router's own: the fallback for an unknown route, or a method the
/// route does not take.
fn is_the_routers_answer(reply: &Reply) -> bool {
    let error = &reply.body["error"];
    (reply.status == StatusCode::NOT_FOUND
        && error["code"] == "not_found"
        && error["message"] == "no such route")
        || (reply.status == StatusCode::METHOD_NOT_ALLOWED && error["code"] == "method_not_allowed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let document = fetch_document(&app).await.body;
    let admin = app.admin_token().await;

    // The check itself notices the router's answers.
    let unknown = app.get("/api/v1/no-such-thing", Some(&admin)).await;
    assert!(is_the_routers_answer(&unknown), "{}", unknown.text);
    let wrong_method = app
        .call(Method::PATCH, "/api/v1/products", Some(&admin), None)
        .await;
    assert!(
        is_the_routers_answer(&wrong_method),
        "{}",
        wrong_method.text
    );

    let mut answered = BTreeMap::new();
    for op in operations(&document) {
        let mut uri = op.path.to_owned();
        for name in template_parameters(op.path) {
            let value = if name == "module" {
                "orders".to_owned()
            } else {
                uuid::Uuid::now_v7().to_string()
            };
            uri = uri.replace(&format!("{{{name}}}"), &value);
        }
        let method = Method::from_bytes(op.method.to_uppercase().as_bytes()).unwrap();
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        let reply = app.call(method, &uri, Some(&admin), body).await;
        assert!(
            !is_the_routers_answer(&reply),
            "{op} is documented but not served: {} {}",
            reply.status,
            reply.text
        );

        // What it answered is documented, with the documented body.
        let responses = &op.operation["responses"];
        let status = reply.status.as_u16().to_string();
        let response = responses.get(&status).unwrap_or_else(|| {
            panic!(
                "{op} answered {status}, which it does not document: {}",
                reply.text
            )
        });
        match response["content"]["application/json"].get("schema") {
            Some(schema) => {
                let (mut properties, mut required) = (BTreeSet::new(), BTreeSet::new());
                declared_properties(&document, schema, &mut properties, &mut required);
                let keys: BTreeSet<String> = reply
                    .body
                    .as_object()
                    .unwrap_or_else(|| panic!("{op} {status}: no JSON object: {}", reply.text))
                    .keys()
                    .cloned()
                    .collect();
                assert!(
                    required.is_subset(&keys) && keys.is_subset(&properties),
                    "{op} {status}: {keys:?} is not the documented {properties:?} \
                     (requiring {required:?})"
                );
            }
            None => assert!(reply.text.is_empty(), "{op} {status}: {}", reply.text),
        }
        answered.insert(op.to_string(), status);
    }
    // Answers that show the requests reached their handlers.
    for (route, status) in [
        ("GET /health", "200"),
        ("POST /api/v1/users", "422"),
        ("GET /api/v1/products/{id}", "404"),
        ("DELETE /api/v1/carts/{user_id}/items", "204"),
        ("PUT /api/v1/orders/{id}/status", "422"),
        (
            "POST /api/v1/admin/dead-letters/{module}/{id}/replay",
            "404",
        ),
    ] {
        assert_eq!(answered[route], status, "{route}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_module() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let document = fetch_document(&app).await.body;
    let all = operations(&document);
    let used_tags: BTreeSet<&str> = all
        .iter()
        .flat_map(|op| op.operation["tags"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for module in MODULES {
        assert!(used_tags.contains(module), "no operation of {module}");
        assert!(
            document["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|tag| tag["name"] == module),
            "no tag {module}"
        );
    }
    let documented: BTreeSet<String> = all.iter().map(ToString::to_string).collect();
    for route in [
        "POST /api/v1/users",
        "POST /api/v1/users/login",
        "GET /api/v1/users/{id}/overview",
        "GET /api/v1/products",
        "POST /api/v1/products",
        "PUT /api/v1/inventory/{product_id}",
        "POST /api/v1/carts/{user_id}/items",
        "DELETE /api/v1/carts/{user_id}/items/{product_id}",
        "POST /api/v1/orders",
        "PUT /api/v1/orders/{id}/status",
        "GET /api/v1/payments/{order_id}",
        "GET /api/v1/notifications",
        "GET /health",
        "GET /ready",
        "GET /api/v1/admin/dead-letters",
        "POST /api/v1/admin/dead-letters/{module}/{id}/replay",
    ] {
        assert!(documented.contains(route), "{route} is not documented");
    }

    // A token is asked for exactly where one is needed.
    let secured = |route: &str| {
        all.iter()
            .find(|op| op.to_string() == route)
            .unwrap()
            .operation
            .get("security")
            .is_some()
    };
    for route in [
        "GET /api/v1/users",
        "POST /api/v1/orders",
        "PUT /api/v1/orders/{id}/status",
        "GET /api/v1/admin/dead-letters",
    ] {
        assert!(secured(route), "{route} names no security");
    }
    for route in [
        "POST /api/v1/users",
        "POST /api/v1/users/login",
        "GET /api/v1/products",
        "GET /health",
    ] {
        assert!(!secured(route), "{route} needs no token");
    }
    // The contract types and `Money` are described, not left opaque.
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["Currency"]["type"], "string");
    let currencies = schemas["Currency"]["enum"].as_array().unwrap();
    assert!(currencies.contains(&json!("EUR")) && !currencies.contains(&json!("AAA")));
    // The rules the server enforces are the document's, not only its prose.
    let rule = |schema: &str, pointer: &str| {
        schemas[schema]
            .pointer(pointer)
            .cloned()
            .unwrap_or_else(|| panic!("{schema}{pointer} is not documented: {}", schemas[schema]))
    };
    assert_eq!(rule("NewItem", "/properties/quantity/minimum"), 1);
    assert_eq!(rule("NewItem", "/properties/quantity/maximum"), 1000);
    // An order is one of two shapes: lines, or the cart.
    assert_eq!(rule("PlaceOrder", "/oneOf/0/properties/lines/minItems"), 1);
    assert_eq!(
        rule("PlaceOrder", "/oneOf/0/properties/lines/maxItems"),
        100
    );
    assert_eq!(rule("PlaceOrder", "/oneOf/0/required"), json!(["lines"]));
    assert_eq!(
        rule("PlaceOrder", "/oneOf/1/properties/from_cart/enum"),
        json!([true])
    );
    assert_eq!(rule("LineRequest", "/properties/quantity/maximum"), 1000);
    assert_eq!(rule("NewProduct", "/properties/sku/maxLength"), 64);
    assert_eq!(rule("NewProduct", "/properties/name/maxLength"), 200);
    assert_eq!(rule("ProductChanges", "/minProperties"), 1);
    // An account change gives an email or a password (the current password alone is not one).
    assert_eq!(
        rule("AccountChanges", "/allOf/1/anyOf"),
        json!([
            { "type": "object", "required": ["email"] },
            { "type": "object", "required": ["password"] },
        ])
    );
    assert_eq!(rule("NewAccount", "/properties/username/minLength"), 3);
    assert!(rule("NewAccount", "/properties/email/pattern").is_string());
    assert_eq!(
        rule("StockChange", "/properties/on_hand/maximum"),
        1_000_000_000
    );
    assert!(rule("OrderSummary", "/properties/status/pattern").is_string());
    let parameter = |route: &str, name: &str| {
        all.iter()
            .find(|op| op.to_string() == route)
            .unwrap()
            .operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(
        parameter("GET /api/v1/products", "category")["maxLength"],
        64
    );
    let status = parameter("GET /api/v1/admin/dead-letters", "status");
    assert!(
        status.to_string().contains("replay_requested"),
        "the dead letters' status is no closed list: {status}"
    );
    assert!(schemas["OrderSummary"]["properties"]["lines"].is_object());
    assert!(schemas["ErrorBody"]["properties"]["error"].is_object());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_documents_only_the_modules_it_hosts() {
    let app = TestApp::spawn_with(Engine::Sqlite, |figment| {
        config::with(figment, "server.modules", ["catalog", "inventory"])
    })
    .await
    .unwrap();
    let document = fetch_document(&app).await.body;
    let tags: BTreeSet<&str> = operations(&document)
        .iter()
        .flat_map(|op| op.operation["tags"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from(["catalog", "inventory", "operations"]),
        "{}",
        document["paths"]
    );
    let declared: BTreeSet<&str> = document["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tag| tag["name"].as_str())
        .collect();
    assert_eq!(declared, tags);
    let users = app.get("/api/v1/users/login", None).await;
    assert!(is_the_routers_answer(&users), "{}", users.text);
    app.stop().await;
}

/// The API browser at `/docs`, read by headless Chromium: Swagger UI, served from the binary,
/// renders the document's operations, every module's under its tag; and nothing it needs
/// comes from elsewhere (the machine's network is closed, so a CDN would leave it blank).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_browser_shows_every_module_s_operations_in_a_real_browser() {
    let Some(chromium) = banyan_e2e::browser::chromium() else {
        return;
    };
    let Some(app) = TestApp::spawn(Engine::Sqlite).await else {
        return;
    };
    let moved = app.get("/docs", None).await;
    assert_eq!(moved.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(moved.headers["location"], "/docs/");
    let url = app.url("/docs/");
    let dom = tokio::task::spawn_blocking({
        let (chromium, url) = (chromium.clone(), url.clone());
        move || banyan_e2e::browser::rendered(&chromium, &url)
    })
    .await
    .unwrap();
    for tag in MODULES.iter().chain(&["operations"]) {
        assert!(
            dom.contains(&format!("id=\"operations-tag-{tag}\"")),
            "no section for {tag} on the page: {dom}"
        );
    }
    for path in ["/api/v1/orders", "/api/v1/products/{id}", "/ready"] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "no {path}: {dom}"
        );
    }
    tokio::task::spawn_blocking(move || {
        banyan_e2e::browser::screenshot(&chromium, &url, (1400, 1100), "api-browser.png")
    })
    .await
    .unwrap();
    app.stop().await;
}

/// Main of a split documents every route it serves, the moved module's (which its gateway
/// proxies) included; the moved module's process documents its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_of_a_split_documents_the_routes_it_proxies() {
    use banyan_e2e::cluster::{Topology, Transport};
    let Some(app) = TestApp::spawn_split(
        Engine::Sqlite,
        Topology::one("payments", Transport::Http),
        |f| f,
    )
    .await
    else {
        return;
    };
    let tags_of = |document: &Value| -> BTreeSet<String> {
        operations(document)
            .iter()
            .flat_map(|op| op.operation["tags"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let main = fetch_document(&app).await.body;
    let expected: BTreeSet<String> = MODULES
        .iter()
        .chain(&["operations"])
        .map(|m| (*m).to_owned())
        .collect();
    assert_eq!(tags_of(&main), expected, "{}", main["paths"]);
    assert!(main["paths"]["/api/v1/payments/{order_id}"]["get"].is_object());
    // What main documents of payments is answered through main.
    let admin = app.admin_token().await;
    let payment = app
        .get(
            &format!("/api/v1/payments/{}", uuid::Uuid::now_v7()),
            Some(&admin),
        )
        .await;
    assert_eq!(payment.status, StatusCode::NOT_FOUND, "{}", payment.text);
    assert_eq!(payment.error_code(), "not_found");
    let elsewhere = app.urls_of("payments", DOCUMENT);
    let own = send(app.client.get(&elsewhere[0])).await.body;
    assert_eq!(
        tags_of(&own),
        BTreeSet::from(["operations".to_owned(), "payments".to_owned()])
    );
    app.stop().await;
}
