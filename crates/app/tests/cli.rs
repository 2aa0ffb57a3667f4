//! The real binary refuses bad configuration, naming the key, before it opens anything.

use std::process::Command;

fn banyan() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_banyan"));
    let data = tempfile::tempdir().expect("a temporary directory");
    command.env(
        "BANYAN_DATABASE__URL",
        format!("sqlite://{}", data.path().display()),
    );
    command
}

fn refuses(command: &mut Command, key: &str) {
    let output = command.output().expect("banyan runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status; stderr: {stderr}"
    );
    assert!(stderr.contains(key), "the message names `{key}`: {stderr}");
}

#[test]
fn a_value_out_of_range_stops_start_up_naming_its_key() {
    refuses(
        banyan().env("BANYAN_BUS__EVENT_QUEUE", "0"),
        "bus.event_queue",
    );
}

#[test]
fn a_value_of_the_wrong_type_stops_start_up_naming_its_key() {
    refuses(
        banyan().env("BANYAN_SERVER__ADDR", "nowhere"),
        "server.addr",
    );
    refuses(
        banyan().env("BANYAN_BUS__MAX_ATTEMPTS", "many"),
        "bus.max_attempts",
    );
}

#[test]
fn an_unknown_key_in_a_config_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[server]\nadress = \"127.0.0.1:1\"\n").expect("write config");
    refuses(banyan().arg("--config").arg(&file), "adress");
}

#[test]
fn a_missing_config_file_stops_start_up_naming_it() {
    refuses(
        banyan().args(["--config", "/nonexistent/banyan.toml"]),
        "/nonexistent/banyan.toml",
    );
}

#[test]
fn a_database_url_of_an_unknown_kind_stops_start_up_naming_its_key() {
    refuses(
        banyan().args(["serve", "--database-url", "mysql://x/y"]),
        "database.url",
    );
}
