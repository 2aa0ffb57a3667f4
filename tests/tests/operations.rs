//! What an operator touches: health, readiness, and dead letters through the API and the CLI.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_db::{DatabaseConfig, Db, sqlx};
use banyan_e2e::{Engine, TestApp, eventually, on_both_engines, process};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_engines!(
    health_and_readiness_answer_with_every_module,
    a_poison_event_is_dead_lettered_listed_and_replayed_through_the_api,
);

async fn health_and_readiness_answer_with_every_module(app: &TestApp) {
    let health = app.get("/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    for module in ["users", "catalog", "inventory"] {
        assert_eq!(
            ready.body["modules"][module]["database"], "ok",
            "{}",
            ready.text
        );
    }
}

/// Puts an event no subscriber can decode into inventory's outbox, as a buggy or older
/// publisher might have.
async fn poison_stock_event(app: &TestApp) {
    let config = DatabaseConfig {
        url: app.storage.url(),
        ..DatabaseConfig::default()
    };
    let inventory = Db::open("inventory", &config, &[]).await.unwrap();
    let id = uuid::Uuid::now_v7();
    let envelope = json!({
        "message_id": id, "subject": "inventory.stock_changed.v1", "correlation_id": "poison-1",
        "causation_id": null, "timestamp_ms": 0, "traceparent": null,
    });
    let mut tx = inventory.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (message_id, subject, aggregate_id, envelope, payload, created_at, \
         claimed_until, attempts) VALUES ($1, 'inventory.stock_changed.v1', $1, $2, $3, 0, 0, 0)",
    )
    .bind(id.to_string())
    .bind(envelope.to_string())
    .bind(r#"{"product_id": "not even a uuid"}"#)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    inventory.close().await;
}

async fn dead_letters(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/admin/dead-letters{query}"), Some(admin))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["items"].as_array().unwrap().clone()
}

async fn a_poison_event_is_dead_lettered_listed_and_replayed_through_the_api(app: &TestApp) {
    let admin = app.admin_token().await;
    poison_stock_event(app).await;
    eventually("the poison event is dead-lettered in catalog", || async {
        !dead_letters(app, &admin, "?module=catalog&status=dead")
            .await
            .is_empty()
    })
    .await;
    let letter = dead_letters(app, &admin, "?module=catalog").await.remove(0);
    assert_eq!(letter["subject"], "inventory.stock_changed.v1");
    assert_eq!(letter["correlation_id"], "poison-1");
    assert!(
        letter["error"].as_str().unwrap().contains("undecodable"),
        "{letter}"
    );
    let id = letter["id"].as_str().unwrap();

    let (_, customer) = app.customer("olga").await;
    let path = format!("/api/v1/admin/dead-letters/catalog/{id}/replay");
    assert_eq!(
        app.get("/api/v1/admin/dead-letters", Some(&customer))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&path, Some(&customer), json!({})).await.status,
        StatusCode::FORBIDDEN
    );

    let replay = app.post(&path, Some(&admin), json!({})).await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.text);
    // Replayed, it fails again (it is still undecodable) and is dead once more, with the
    // replay's attempt counted.
    eventually("the replayed letter is dead again", || async {
        let letters = dead_letters(app, &admin, "?module=catalog").await;
        letters[0]["status"] == "dead"
            && letters[0]["attempts"].as_i64() > letter["attempts"].as_i64()
    })
    .await;

    let unknown = app
        .post(
            &format!(
                "/api/v1/admin/dead-letters/catalog/{}/replay",
                uuid::Uuid::now_v7()
            ),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let nowhere = app
        .post(
            &format!("/api/v1/admin/dead-letters/nowhere/{id}/replay"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    let bad_status = app
        .get("/api/v1/admin/dead-letters?status=zombie", Some(&admin))
        .await;
    // The document lists the four states; any other is a query it does not accept.
    assert_eq!(
        bad_status.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_status.text
    );
    assert_eq!(bad_status.error_code(), "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_dead_letters_and_asks_the_running_server_to_replay_one() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let admin = app.admin_token().await;
    poison_stock_event(&app).await;
    eventually("the poison event is dead-lettered", || async {
        !dead_letters(&app, &admin, "?status=dead").await.is_empty()
    })
    .await;
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(process::binary())
            .args(args)
            .env("BANYAN_DATABASE__URL", app.storage.url())
            .env("BANYAN_LOG__LEVEL", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed: Vec<Value> =
        serde_json::from_str(&cli(&["dead-letters", "list", "--module", "catalog"])).unwrap();
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let attempts = listed[0]["attempts"].as_i64().unwrap();

    let said = cli(&["dead-letters", "replay", "catalog", &id]);
    assert!(said.contains("requested"), "{said}");
    // The server, not the CLI, carries the replay out.
    eventually("the server replays the letter", || async {
        let letters = dead_letters(&app, &admin, "?module=catalog").await;
        letters[0]["status"] == "dead" && letters[0]["attempts"].as_i64() > Some(attempts)
    })
    .await;
    app.stop().await;
}
