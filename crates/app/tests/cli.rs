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

#[test]
fn an_environment_variable_of_no_section_stops_start_up_naming_it() {
    refuses(
        banyan().env("BANYAN_SERVR__ADDR", "127.0.0.1:1"),
        "BANYAN_SERVR__ADDR",
    );
}

#[test]
fn serve_s_flags_work_without_the_command_and_the_database_flag_on_every_command_that_opens_it() {
    refuses(
        banyan().args(["--database-url", "mysql://x/y"]),
        "database.url",
    );
    refuses(
        banyan().args(["seed", "--database-url", "mysql://x/y"]),
        "database.url",
    );
    refuses(
        banyan().args(["dead-letters", "list", "--database-url", "mysql://x/y"]),
        "database.url",
    );
    let id = "01890000-0000-7000-8000-000000000000";
    refuses(
        banyan().args([
            "dead-letters",
            "replay",
            "orders",
            id,
            "--database-url",
            "mysql://x/y",
        ]),
        "database.url",
    );
}

#[test]
fn a_dead_letter_status_that_does_not_exist_is_refused_with_the_ones_that_do() {
    refuses(
        banyan().args(["dead-letters", "list", "--status", "bogus"]),
        "replay_requested",
    );
}

#[test]
fn the_help_names_the_environment_form_of_each_setting() {
    let output = banyan().arg("--help").output().expect("banyan runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "BANYAN_SERVER__ADDR",
        "BANYAN_DATABASE__URL",
        "BANYAN_METRICS__ADDR",
        "BANYAN_LOG__FORMAT",
        "BANYAN_TOPOLOGY__PROCESS",
        "RUST_LOG",
    ] {
        assert!(help.contains(variable), "--help names {variable}: {help}");
    }
}

/// `banyan seed` in a directory of its own, on a SQLite directory there; `envs` on top.
fn seed(envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_banyan"));
    command
        .current_dir(dir.path())
        .arg("seed")
        .args(args)
        .env_remove("RUST_LOG")
        .env(
            "BANYAN_DATABASE__URL",
            format!("sqlite://{}", dir.path().join("data").display()),
        );
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().expect("banyan runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn seed_says_what_it_made_and_logs_nothing_else_at_the_default_level() {
    let output = seed(&[], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Seeded 8 new products"), "{stdout}");
    assert!(stdout.contains("alice"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn rust_log_is_honoured_and_logs_to_a_pipe_are_json_lines_without_colour() {
    let output = seed(&[("RUST_LOG", "info")], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.lines().count() > 5, "{stderr}");
    for line in stderr.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(parsed["level"].is_string(), "{line}");
    }
    // Pretty, asked for, is still plain text in a pipe.
    let output = seed(
        &[("RUST_LOG", "info"), ("BANYAN_LOG__FORMAT", "pretty")],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI codes in a pipe: {stderr:?}"
    );
    assert!(!stderr.starts_with('{'), "{stderr}");
}

#[test]
fn logs_on_a_terminal_are_pretty_and_coloured() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // util-linux's `script` gives the command a terminal of its own.
    let command = format!(
        "RUST_LOG=info BANYAN_DATABASE__URL=sqlite://{}/data {} seed",
        dir.path().display(),
        env!("CARGO_BIN_EXE_banyan")
    );
    let Ok(output) = Command::new("script")
        .current_dir(dir.path())
        .args(["-qec", &command, "/dev/null"])
        .output()
    else {
        panic!("util-linux's `script` is needed to give banyan a terminal");
    };
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    assert!(screen.contains("INFO"), "{screen}");
    assert!(
        screen.contains('\u{1b}'),
        "no colour on a terminal: {screen:?}"
    );
    assert!(
        !screen.contains("{\"timestamp\""),
        "JSON on a terminal: {screen}"
    );
}

#[test]
fn an_address_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = banyan()
        .current_dir(dir.path())
        .args(["--addr", &addr, "--metrics-addr", "127.0.0.1:0"])
        .env("BANYAN_LOG__LEVEL", "warn")
        .output()
        .expect("banyan runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches(&addr).count(),
        1,
        "the failure once, naming the address: {stderr}"
    );
}
