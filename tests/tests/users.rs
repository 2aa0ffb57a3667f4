//! The users module over HTTP, in every topology.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{TestApp, on_every_topology};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_every_topology!(
    a_customer_registers_logs_in_and_reads_their_account,
    a_duplicate_username_or_email_gets_409,
    a_wrong_password_gets_401_without_saying_which_part_was_wrong,
    no_response_ever_carries_a_password_or_its_hash,
    a_customer_cannot_see_or_change_another_account,
    an_account_changes_its_email_and_password_but_not_its_role,
    a_deleted_account_can_no_longer_log_in,
    only_an_admin_lists_accounts,
    bad_registrations_get_a_4xx_with_a_json_error,
    protected_routes_need_a_valid_token,
    changing_ones_password_needs_the_current_one,
    the_last_admin_cannot_be_deleted,
    a_deleted_accounts_token_is_refused_on_every_route,
    a_token_older_than_a_password_change_is_refused_and_a_new_one_works,
);

/// A route of every module that a customer's own token opens (payments': one that would,
/// were the payment there). Wherever the module runs, a revoked token is refused on each.
fn routes_of_every_module(id: &str) -> Vec<String> {
    vec![
        format!("/api/v1/users/{id}"),
        format!("/api/v1/users/{id}/overview"),
        format!("/api/v1/carts/{id}"),
        format!("/api/v1/orders/user/{id}"),
        "/api/v1/notifications".to_owned(),
        format!("/api/v1/payments/{}", uuid::Uuid::now_v7()),
        format!("/api/v1/inventory/{}", uuid::Uuid::now_v7()),
    ]
}

/// Waits until `token` is refused with 401 on every route of [`routes_of_every_module`].
async fn refused_everywhere(app: &TestApp, id: &str, token: &str) {
    banyan_e2e::eventually("the revoked token is refused on every route", || async {
        for route in routes_of_every_module(id) {
            if app.get(&route, Some(token)).await.status != StatusCode::UNAUTHORIZED {
                return false;
            }
        }
        true
    })
    .await;
}

async fn a_deleted_accounts_token_is_refused_on_every_route(app: &TestApp) {
    let (id, token) = app.customer("kate").await;
    let cart = format!("/api/v1/carts/{id}");
    assert_eq!(app.get(&cart, Some(&token)).await.status, StatusCode::OK);
    let deleted = app
        .delete(&format!("/api/v1/users/{id}"), Some(&token))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    refused_everywhere(app, &id, &token).await;
    let reply = app.get(&cart, Some(&token)).await;
    assert_eq!(reply.error_code(), "unauthorized", "{}", reply.text);
}

async fn a_token_older_than_a_password_change_is_refused_and_a_new_one_works(app: &TestApp) {
    let (id, old) = app.customer("liam").await;
    let changed = app
        .put(
            &format!("/api/v1/users/{id}"),
            Some(&old),
            json!({ "password": "liam-new-password", "current_password": "liam-secret-pw" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    // A login right after the change: its token is newer than the revocation.
    let new = app.login("liam", "liam-new-password").await;
    refused_everywhere(app, &id, &old).await;
    for route in [format!("/api/v1/carts/{id}"), format!("/api/v1/users/{id}")] {
        let reply = app.get(&route, Some(&new)).await;
        assert_eq!(reply.status, StatusCode::OK, "{route}: {}", reply.text);
    }
}

async fn changing_ones_password_needs_the_current_one(app: &TestApp) {
    let (id, token) = app.customer("jill").await;
    let path = format!("/api/v1/users/{id}");
    let missing = app
        .put(
            &path,
            Some(&token),
            json!({ "password": "jill-new-password" }),
        )
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN, "{}", missing.text);
    assert_eq!(missing.error_code(), "current_password_required");
    assert_eq!(
        missing.body["error"]["details"]["field"],
        "current_password"
    );
    let wrong = app
        .put(
            &path,
            Some(&token),
            json!({ "password": "jill-new-password", "current_password": "not-jills-password" }),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);
    assert_eq!(wrong.error_code(), "wrong_password");
    let old_still_works = app.login("jill", "jill-secret-pw").await;
    assert!(!old_still_works.is_empty());
    // An admin resets another's password without knowing it.
    let admin = app.admin_token().await;
    let reset = app
        .put(
            &path,
            Some(&admin),
            json!({ "password": "jill-reset-password" }),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    app.login("jill", "jill-reset-password").await;
}

async fn the_last_admin_cannot_be_deleted(app: &TestApp) {
    let admin = app.admin_token().await;
    let listed = app.get("/api/v1/users?per_page=100", Some(&admin)).await;
    let admins: Vec<String> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "admin")
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(admins.len(), 1, "{}", listed.text);
    let refused = app
        .delete(&format!("/api/v1/users/{}", admins[0]), Some(&admin))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.error_code(), "last_admin");
    // The admin is still there and still works.
    let again = app.get("/api/v1/users?per_page=1", Some(&admin)).await;
    assert_eq!(again.status, StatusCode::OK);
}

async fn a_customer_registers_logs_in_and_reads_their_account(app: &TestApp) {
    let reply = app
        .post(
            "/api/v1/users",
            None,
            json!({ "username": "Alice", "email": "Alice@Example.test", "password": "alice-password" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.body["username"], "alice");
    assert_eq!(reply.body["email"], "alice@example.test");
    assert_eq!(reply.body["role"], "customer");
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        format!("/api/v1/users/{id}")
    );

    let token = app.login("alice@example.test", "alice-password").await;
    let me = app.get(&format!("/api/v1/users/{id}"), Some(&token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], id.as_str());
}

async fn a_duplicate_username_or_email_gets_409(app: &TestApp) {
    app.customer("bob").await;
    let same_name = app
        .post(
            "/api/v1/users",
            None,
            json!({ "username": "BOB", "email": "other@example.test", "password": "password-123" }),
        )
        .await;
    assert_eq!(same_name.status, StatusCode::CONFLICT, "{}", same_name.text);
    assert!(same_name.text.contains("username"));
    let same_email = app
        .post(
            "/api/v1/users",
            None,
            json!({ "username": "bobby", "email": "Bob@Example.test", "password": "password-123" }),
        )
        .await;
    assert_eq!(
        same_email.status,
        StatusCode::CONFLICT,
        "{}",
        same_email.text
    );
    assert!(same_email.text.contains("email"));
}

async fn a_wrong_password_gets_401_without_saying_which_part_was_wrong(app: &TestApp) {
    app.customer("carol").await;
    let wrong_password = app
        .post(
            "/api/v1/users/login",
            None,
            json!({ "username": "carol", "password": "not-her-password" }),
        )
        .await;
    let unknown_user = app
        .post(
            "/api/v1/users/login",
            None,
            json!({ "username": "nobody-here", "password": "not-her-password" }),
        )
        .await;
    assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_user.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password.body, unknown_user.body);
}

async fn no_response_ever_carries_a_password_or_its_hash(app: &TestApp) {
    let password = "very-distinctive-password-42";
    let created = app
        .post(
            "/api/v1/users",
            None,
            json!({ "username": "dave", "email": "dave@example.test", "password": password }),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let token = app.login("dave", password).await;
    let read = app.get(&format!("/api/v1/users/{id}"), Some(&token)).await;
    let updated = app
        .put(
            &format!("/api/v1/users/{id}"),
            Some(&token),
            json!({ "password": "another-distinctive-pw", "current_password": password }),
        )
        .await;
    let admin = app.admin_token().await;
    let listed = app.get("/api/v1/users?per_page=100", Some(&admin)).await;
    for reply in [&created, &read, &updated, &listed] {
        assert!(reply.status.is_success(), "{}", reply.text);
        assert!(!reply.text.contains(password));
        assert!(!reply.text.contains("argon2"));
        assert!(
            !reply.text.to_lowercase().contains("password"),
            "{}",
            reply.text
        );
    }
}

async fn a_customer_cannot_see_or_change_another_account(app: &TestApp) {
    let (erin, erin_token) = app.customer("erin").await;
    let (frank, _) = app.customer("frank").await;
    let path = format!("/api/v1/users/{frank}");
    assert_eq!(
        app.get(&path, Some(&erin_token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.put(
            &path,
            Some(&erin_token),
            json!({ "email": "x@example.test" })
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&path, Some(&erin_token)).await.status,
        StatusCode::NOT_FOUND
    );
    // An admin may.
    let admin = app.admin_token().await;
    assert_eq!(app.get(&path, Some(&admin)).await.status, StatusCode::OK);
    assert_eq!(
        app.get(&format!("/api/v1/users/{erin}"), Some(&erin_token))
            .await
            .status,
        StatusCode::OK
    );
}

async fn an_account_changes_its_email_and_password_but_not_its_role(app: &TestApp) {
    let (id, token) = app.customer("gina").await;
    let path = format!("/api/v1/users/{id}");
    let role = app
        .put(&path, Some(&token), json!({ "role": "admin" }))
        .await;
    assert_eq!(
        role.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        role.text
    );
    let me = app.get(&path, Some(&token)).await;
    assert_eq!(me.body["role"], "customer");

    let changed = app
        .put(
            &path,
            Some(&token),
            json!({
                "email": "gina@new.example.test",
                "password": "gina-new-password",
                "current_password": "gina-secret-pw",
            }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.body["email"], "gina@new.example.test");
    // The change revoked the old token: the rest goes on with a new one.
    let token = app.login("gina", "gina-new-password").await;

    app.customer("hank").await;
    let taken = app
        .put(&path, Some(&token), json!({ "email": "hank@example.test" }))
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let empty = app.put(&path, Some(&token), json!({})).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn a_deleted_account_can_no_longer_log_in(app: &TestApp) {
    let (id, token) = app.customer("ivan").await;
    let path = format!("/api/v1/users/{id}");
    assert_eq!(
        app.delete(&path, Some(&token)).await.status,
        StatusCode::NO_CONTENT
    );
    let login = app
        .post(
            "/api/v1/users/login",
            None,
            json!({ "username": "ivan", "password": "ivan-secret-pw" }),
        )
        .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    let admin = app.admin_token().await;
    assert_eq!(
        app.get(&path, Some(&admin)).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn only_an_admin_lists_accounts(app: &TestApp) {
    let (_, token) = app.customer("judy").await;
    let denied = app.get("/api/v1/users", Some(&token)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.error_code(), "forbidden");
    let admin = app.admin_token().await;
    let listed = app
        .get("/api/v1/users?page=1&per_page=10", Some(&admin))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["total"], 2);
    let bad_page = app.get("/api/v1/users?page=0", Some(&admin)).await;
    assert_eq!(bad_page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge_page = app.get("/api/v1/users?per_page=100000", Some(&admin)).await;
    assert_eq!(huge_page.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn bad_registrations_get_a_4xx_with_a_json_error(app: &TestApp) {
    let cases = [
        (
            json!({ "username": "kate", "email": "kate@example.test" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "username": "kate", "email": "kate@example.test", "password": "kate-password", "role": "admin" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "username": "kate", "email": "not-an-email", "password": "kate-password" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "username": "k", "email": "kate@example.test", "password": "kate-password" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "username": "kate", "email": "kate@example.test", "password": "short" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "username": 42, "email": "kate@example.test", "password": "kate-password" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!(["not", "an", "object"]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, status) in cases {
        let reply = app.post("/api/v1/users", None, body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert!(reply.body["error"]["code"].is_string(), "{}", reply.text);
    }

    let malformed = banyan_e2e::send(
        app.client
            .post(app.url("/api/v1/users"))
            .header("content-type", "application/json")
            .body("{\"username\": \"kate\", "),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "malformed_json");

    let not_json = banyan_e2e::send(app.client.post(app.url("/api/v1/users")).body("hello")).await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(not_json.body["error"]["message"].is_string());

    // Headers only: the server must refuse on the declared length, before reading the body.
    let oversized = raw_http(
        app,
        "POST /api/v1/users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: 200000\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
    assert!(oversized.contains("payload_too_large"), "{oversized}");

    let unknown_route = app.get("/api/v1/nothing-here", None).await;
    assert_eq!(unknown_route.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_route.error_code(), "not_found");
    let wrong_method = app.call(Method::PATCH, "/api/v1/users", None, None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "method_not_allowed");
}

async fn protected_routes_need_a_valid_token(app: &TestApp) {
    let (id, _) = app.customer("liam").await;
    let path = format!("/api/v1/users/{id}");
    let none = app.get(&path, None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error_code(), "unauthorized");
    let forged = app.get(&path, Some("eyJhbGciOiJIUzI1NiJ9.e30.bad")).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let not_an_id = app.get("/api/v1/users/not-a-uuid", None).await;
    assert!(not_an_id.status.is_client_error());
    let admin = app.admin_token().await;
    let unknown = app
        .get(
            &format!("/api/v1/users/{}", uuid::Uuid::now_v7()),
            Some(&admin),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad_id = app.get("/api/v1/users/not-a-uuid", Some(&admin)).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_id.error_code(), "invalid_path");
}

/// Sends raw bytes and reads the whole answer (the request must say `connection: close`).
async fn raw_http(app: &TestApp, request: &str) -> String {
    app.raw(request.as_bytes()).await
}
