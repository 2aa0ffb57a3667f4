//! Debian's Chromium, headless, for the tests that read a page as a person would see it.

use std::{path::Path, process::Command};

/// Debian's Chromium, or `None` outside CI when it is not installed (`.ci/run` installs it).
pub fn chromium() -> Option<String> {
    let path = std::env::var("BANYAN_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Chromium is needed in CI at {path}"
    );
    eprintln!("Chromium not found at {path}; skipping the browser test");
    None
}

/// Chromium, headless, with the flags this machine needs (no background networking: its
/// closed network refuses it), on a fresh profile.
fn browser(chromium: &str, profile: &Path) -> Command {
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        // Long enough for a page's scripts to fetch what they show (the dashboard polls every
        // 2 s; the API browser fetches the document once).
        "--virtual-time-budget=5000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Runs the browser on a fresh profile with `args`; its standard output.
pub fn run(chromium: &str, args: &[String]) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("a temporary directory");
    let output = browser(chromium, profile.path())
        .args(args)
        .output()
        .expect("Chromium runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The page as the browser rendered it, after its scripts ran.
pub fn rendered(chromium: &str, url: &str) -> String {
    String::from_utf8(run(chromium, &["--dump-dom".to_owned(), url.to_owned()]))
        .expect("the DOM as UTF-8")
}

/// A screenshot of `url` at `width`×`height`, as PNG bytes (checked to be a picture). With
/// `BANYAN_TEST_SCREENSHOTS=docs` it is also kept as `docs/<name>` in the repository.
pub fn screenshot(chromium: &str, url: &str, (width, height): (u32, u32), name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let shot = dir.path().join(name);
    run(
        chromium,
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={width},{height}"),
            url.to_owned(),
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("BANYAN_TEST_SCREENSHOTS") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(keep);
        std::fs::write(dir.join(name), &png).expect("the kept screenshot");
    }
    png
}
