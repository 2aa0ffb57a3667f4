//! `deploy/` as far as it can be checked without a Docker engine or a cluster: the Dockerfile
//! with hadolint, the scripts with shellcheck, every compose file with `docker-compose config`
//! (and refusing to render without its secrets), every Kubernetes manifest and every overlay as
//! kustomize renders it with kubernetes-validate. `deploy/validate.sh` does it; `.ci/run`
//! installs the tools.

use std::{path::Path, process::Command};

#[test]
fn the_containers_and_manifests_validate() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/validate.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .expect("bash runs deploy/validate.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("validate: every check passed."), "{stdout}");
    // Each overlay was rendered and checked, not only the files one by one.
    for overlay in [
        "monolith",
        "split-payments-http",
        "split-payments-grpc",
        "split-payments-nats",
        "split-inventory-payments-nats",
    ] {
        assert!(
            stdout.lines().any(|line| line.starts_with("ok:")
                && line.contains("kustomize")
                && line.contains(&format!("overlays/{overlay} "))),
            "the overlay {overlay} was not rendered and validated:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("ok:   hadolint deploy/Dockerfile"),
        "{stdout}"
    );
}
