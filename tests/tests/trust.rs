//! Trust, tried as an attacker would: secrets that shipped in a file open nothing, a process
//! exposed beyond loopback starts only with secrets of its own, and the split keeps its
//! internal traffic to itself.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{process::Stdio, time::Duration};

use banyan_app::secrets::PUBLISHED;
use banyan_e2e::{Engine, TestApp, cluster::Topology, process::BanyanProcess, send};
use banyan_kit::auth::{Authenticator, Role};
use reqwest::StatusCode;

/// An admin token for a random user, signed with `secret`.
fn forged_admin_token(secret: &str) -> String {
    Authenticator::new(secret.as_bytes(), Duration::from_secs(3600))
        .issue(uuid::Uuid::new_v4(), Role::Admin)
        .unwrap()
        .access_token
}

/// What every forged token is tried on: an admin route of main's own, and (in a split) one
/// of a moved module's, which main proxies.
const ADMIN_ROUTES: [&str; 2] = [
    "/api/v1/users",
    "/api/v1/payments/018f0000-0000-7000-8000-000000000000",
];

async fn refuses_forged_tokens(client: &reqwest::Client, base: &str) {
    let mut secrets: Vec<&str> = PUBLISHED.to_vec();
    // And a secret a test might have used: nothing but the process's own key is accepted.
    secrets.push("0123456789abcdef0123456789abcdef");
    for secret in secrets {
        let token = forged_admin_token(secret);
        for route in ADMIN_ROUTES {
            let reply = send(client.get(format!("{base}{route}")).bearer_auth(&token)).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{route} with a token signed by {secret:?}: {}",
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn a_fresh_run_keeps_a_generated_key_and_refuses_tokens_signed_with_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let process = BanyanProcess::start_fresh_in(dir.path(), &[], &[]).await;
    let client = banyan_bus::http::client_builder()
        .build()
        .expect("an HTTP client");
    refuses_forged_tokens(&client, &process.url("")).await;

    let key = dir.path().join("data/jwt_secret");
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(
        secret.len() >= 32,
        "a generated key of {} bytes",
        secret.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the key");
    }
    // The kept key is the one in use: it survives a restart, so tokens do too.
    let token = forged_admin_token(&secret);
    let reply = send(client.get(process.url("/api/v1/users")).bearer_auth(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(process.terminate().await.success());
    let restarted = BanyanProcess::start_fresh_in(dir.path(), &[], &[]).await;
    let reply = send(
        client
            .get(restarted.url("/api/v1/users"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// Runs `banyan serve --addr <addr> <args>` in an empty directory with `env` and returns its
/// exit code and stderr if it exits within a few seconds, `None` if it is still serving.
async fn start_on(addr: &str, args: &[&str], env: &[(&str, &str)]) -> Option<(i32, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(banyan_e2e::process::binary());
    command
        .args(["serve", "--addr", addr])
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    match exited {
        Ok(status) => {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
                .await
                .unwrap();
            Some((status.unwrap().code().unwrap_or(-1), text))
        }
        Err(_) => None,
    }
}

/// A case of start-up refused: its name, the arguments, the environment and the key named.
type Refusal<'a> = (&'a str, &'a [&'a str], Vec<(&'a str, &'a str)>, &'a str);

#[tokio::test]
async fn a_process_listening_beyond_loopback_starts_only_with_secrets_of_its_own() {
    let own_key = (
        "BANYAN_AUTH__JWT_SECRET",
        "a-key-of-our-own-0123456789abcdef0123",
    );
    let split = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/split-payments-http.toml")
        .canonicalize()
        .unwrap();
    let split = split.to_str().unwrap();
    let cases: [Refusal; 4] = [
        ("no key", &[], vec![], "auth.jwt_secret"),
        (
            "a published key",
            &[],
            vec![("BANYAN_AUTH__JWT_SECRET", PUBLISHED[0])],
            "auth.jwt_secret",
        ),
        (
            "a short key",
            &[],
            vec![("BANYAN_AUTH__JWT_SECRET", "too-short")],
            "auth.jwt_secret",
        ),
        (
            "a split without the process's identity key",
            &["--config", split],
            vec![own_key],
            "topology.identity.key",
        ),
    ];
    for (case, args, env, key) in cases {
        let (code, stderr) = start_on("0.0.0.0:0", args, &env)
            .await
            .unwrap_or_else(|| panic!("{case}: the process started"));
        assert_ne!(code, 0, "{case}: {stderr}");
        assert!(stderr.contains(key), "{case}: names {key}: {stderr}");
        if let Some((_, secret)) = env.first() {
            assert!(!stderr.contains(secret), "{case}: echoes the secret");
        }
    }
    assert!(
        start_on("0.0.0.0:0", &[], &[own_key]).await.is_none(),
        "with a key of its own it serves"
    );
}

#[tokio::test]
async fn a_split_refuses_tokens_signed_with_any_shipped_secret() {
    let Some(app) = TestApp::spawn_split(
        Engine::Sqlite,
        Topology::one("payments", banyan_e2e::cluster::Transport::Http),
        |figment| figment,
    )
    .await
    else {
        return;
    };
    refuses_forged_tokens(&app.client, &app.url("")).await;
    // Main refused them: not one reached the process hosting payments.
    let payments = app.cluster().process("payments").output();
    assert!(
        !payments.contains(&ADMIN_ROUTES[1][16..]),
        "a forged token was forwarded:\n{payments}"
    );
    // An expired or garbled token neither.
    let reply = send(
        app.client
            .get(app.url(ADMIN_ROUTES[1]))
            .header("authorization", "Bearer not.a.token"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    app.stop().await;
}

/// A registration of an instance of `module` in `process`, at a listener nobody serves.
fn registration(instance: &str, process: &str, module: &str) -> serde_json::Value {
    serde_json::json!({
        "instance_id": instance, "process": process,
        "base_url": "http://127.0.0.1:9", "bus_url": "http://127.0.0.1:9",
        "modules": [{ "name": module, "transport": "http", "subscriptions": [] }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_speaks_only_as_itself_and_only_for_its_own_modules() {
    let Some(app) = TestApp::spawn_split(
        Engine::Sqlite,
        Topology::one("payments", banyan_e2e::cluster::Transport::Http),
        |figment| figment,
    )
    .await
    else {
        return;
    };
    let cluster = app.cluster();
    let main = &cluster.main;
    let as_payments = cluster.credential("payments");
    // Another key that says it is payments: what a rogue with the configuration file has.
    let elsewhere = tempfile::tempdir().unwrap();
    let as_rogue =
        banyan_app::identity::development_credential(elsewhere.path(), "payments").unwrap();
    let client = &app.client;
    let register = |token: Option<String>, body: serde_json::Value| {
        let mut request = client
            .post(main.internal_url("/api/v1/services/register"))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request)
    };
    for (case, token, body, status) in [
        (
            "no identity",
            None,
            registration("intruder", "payments", "payments"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another key as payments",
            Some(as_rogue.clone()),
            registration("intruder", "payments", "payments"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "payments as main",
            Some(as_payments.clone()),
            registration("intruder", "main", "orders"),
            StatusCode::FORBIDDEN,
        ),
        (
            "payments registering orders",
            Some(as_payments.clone()),
            registration("intruder", "payments", "orders"),
            StatusCode::CONFLICT,
        ),
    ] {
        let reply = register(token, body).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.text);
    }

    // Events: payments may not publish orders', a rogue nothing at all; requests need an
    // identity too.
    let bus_call = |path: String, token: &str| {
        send(
            client
                .post(main.internal_url(&path))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body("{}"),
        )
    };
    let push = |subject: &str| format!("/bus/v1/events/{subject}?module=notifications");
    let ask = "/bus/v1/requests/users.get_user.v1".to_owned();
    for (case, path, token, status) in [
        (
            "payments publishing orders' event",
            push("orders.order_confirmed.v1"),
            &as_payments,
            StatusCode::FORBIDDEN,
        ),
        (
            "another key publishing payments' event",
            push("payments.payment_completed.v1"),
            &as_rogue,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another key asking users",
            ask.clone(),
            &as_rogue,
            StatusCode::UNAUTHORIZED,
        ),
        // Payments sends no request to users (its module declares none).
        (
            "payments asking users",
            ask,
            &as_payments,
            StatusCode::FORBIDDEN,
        ),
    ] {
        let reply = bus_call(path, token).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.text);
    }

    // Nor can payments take main's own instance out of rotation.
    let services = cluster.services().await;
    let main_instance = services["modules"]["orders"]["instances"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = send(
        client
            .delete(main.internal_url(&format!("/api/v1/services/{main_instance}")))
            .bearer_auth(&as_payments),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);

    // Nothing rogue is in rotation: the only payments instance is the real one.
    let healthy = cluster.healthy("payments", 1).await;
    assert_eq!(healthy[0]["base_url"], cluster.process("payments").url(""));
    assert!(!cluster.services().await.to_string().contains("intruder"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_every_listener_refuses_plaintext_and_the_processes_call_each_other_over_it() {
    let Some(app) = TestApp::spawn_split(
        Engine::Sqlite,
        Topology::payments_and_notifications_over_https(),
        |figment| figment,
    )
    .await
    else {
        return;
    };
    let cluster = app.cluster();
    let plain = banyan_bus::http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let payments = cluster.process("payments");
    for (name, base) in [
        ("main", cluster.main.url("")),
        ("main internal", cluster.main.internal_url("")),
        ("payments", payments.url("")),
        ("payments internal", payments.internal_url("")),
    ] {
        assert!(base.starts_with("https://"), "{name}: {base}");
        let plaintext = base.replacen("https://", "http://", 1);
        let answer = plain.get(format!("{plaintext}/health")).send().await;
        assert!(answer.is_err(), "{name} answered plaintext: {answer:?}");
        // And a client that does not trust the test's authority is refused too.
        let untrusting = plain.get(format!("{base}/health")).send().await;
        assert!(untrusting.is_err(), "{name}: {untrusting:?}");
    }
    // Over TLS the processes found and called each other: the registry lists them at https
    // addresses, and a checkout through main crosses every hop.
    let instance = &cluster.healthy("payments", 1).await[0];
    assert!(
        instance["bus_url"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{instance}"
    );
    assert!(
        instance["base_url"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{instance}"
    );
    let (_, token) = app.customer("tls-shopper").await;
    let reply = app
        .get(
            &format!("/api/v1/payments/{}", uuid::Uuid::now_v7()),
            Some(&token),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "proxied to payments: {}",
        reply.text
    );
    app.stop().await;
}

/// Publish rights of one process's NATS user: its modules' events, any request, JetStream's
/// API and acks, replies.
fn nats_user(user: &str, prefix: &str, modules: &[&str]) -> String {
    let events: Vec<String> = modules
        .iter()
        .map(|m| format!("\"{prefix}.evt.{m}.>\""))
        .collect();
    let requests: Vec<String> = modules
        .iter()
        .map(|m| format!("\"{prefix}.req.{m}.>\""))
        .collect();
    format!(
        "{{ user: \"{user}\", password: \"{user}-nats-password\", permissions: {{ \
           publish: {{ allow: [{events}, \"{prefix}.req.>\", \"$JS.API.>\", \"$JS.ACK.>\", \"_INBOX.>\"] }}, \
           subscribe: {{ allow: [\"_INBOX.>\", {requests}] }} }} }}",
        events = events.join(", "),
        requests = requests.join(", "),
    )
}

/// Over NATS the processes connect as users of their own, and nats-server's subject
/// permissions are what keeps one from speaking for another: Banyan's own identities ride
/// the HTTP calls only (registration), not the NATS messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_each_process_is_a_user_of_its_own_that_publishes_its_own_events_only() {
    // Any prefix: the cluster picks one of its own.
    let prefix = "*";
    let main_modules = [
        "users",
        "catalog",
        "inventory",
        "cart",
        "orders",
        "notifications",
    ];
    let config = format!(
        "authorization {{ users = [ {}, {} ] }}",
        nats_user("main", prefix, &main_modules),
        nats_user("payments", prefix, &["payments"]),
    );
    let Some(nats) = banyan_bus::testing::PrivateNats::start_with(&config).await else {
        return;
    };
    // Without credentials nothing connects.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(nats.url())
        .await;
    assert!(anonymous.is_err(), "an anonymous client connected");

    let topology = Topology {
        placements: vec![(
            "payments".into(),
            "payments".into(),
            banyan_e2e::cluster::Transport::Nats,
        )],
        processes: vec!["payments".into()],
        nats_url: Some(nats.url_as("main", "main-nats-password")),
        tls: false,
        process_env: vec![(
            "payments".into(),
            "BANYAN_TOPOLOGY__NATS__URL".into(),
            nats.url_as("payments", "payments-nats-password"),
        )],
    };
    let Some(app) = TestApp::spawn_split(Engine::Sqlite, topology, |figment| figment).await else {
        return;
    };
    let cluster = app.cluster();
    let corner = &cluster.nats.as_ref().unwrap().config;
    let (stream, prefix) = (corner.stream.clone(), corner.subject_prefix.clone());

    // Each on its own user, the shop works: a checkout crosses main and payments over NATS.
    let admin = app.admin_token().await;
    let product = app.product(&admin, "TRUST-NATS-1", "tea", 450).await;
    let stocked = app.stock(&admin, &product, 10).await;
    assert_eq!(stocked.status, StatusCode::OK, "{}", stocked.text);
    let (_, token) = app.customer("nats-shopper").await;
    let order = app
        .post(
            "/api/v1/orders?wait_ms=30000",
            Some(&token),
            serde_json::json!({ "lines": [{ "product_id": product, "quantity": 1 }],
                                "payment_method": "tok_visa" }),
        )
        .await;
    assert_eq!(order.body["status"], "confirmed", "{}", order.text);

    // Payments' user may not publish orders' events: the server refuses the message, so the
    // stream never holds it.
    let as_payments = banyan_bus::nats::connect(&nats.url_as("payments", "payments-nats-password"))
        .await
        .unwrap();
    let forged = format!("{prefix}.evt.orders.order_confirmed.v1");
    let published = async {
        async_nats::jetstream::new(as_payments)
            .publish(forged.clone(), "{}".into())
            .await?
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(15), published).await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "the forged event was acknowledged: {outcome:?}"
    );
    let as_main = banyan_bus::nats::connect(&nats.url_as("main", "main-nats-password"))
        .await
        .unwrap();
    let held = async_nats::jetstream::new(as_main)
        .get_stream(&stream)
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&forged)
        .await
        .unwrap();
    // The last on that subject is the real confirmation of the order, not the forgery.
    let payload = String::from_utf8_lossy(&held.payload).into_owned();
    assert!(
        payload.contains(order.body["id"].as_str().unwrap()),
        "the stream holds a forged event: {payload}"
    );
    app.stop().await;
}
