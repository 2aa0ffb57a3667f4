#!/usr/bin/env bash
# Prints a new set of Banyan's deployment secrets as KEY=value lines, one file for both:
#
#   deploy/gen-secrets.sh > deploy/compose/.env                       # docker compose reads it
#   kubectl create namespace banyan
#   kubectl -n banyan create secret generic banyan --from-env-file=deploy/compose/.env
#
# JWT_SECRET (auth.jwt_secret: 48 random bytes, base64), POSTGRES_PASSWORD (hex: it goes into
# URLs), ADMIN_PASSWORD (the bootstrap admin's), NATS_<PROCESS>_PASSWORD (hex) and, for each
# process of the shipped topologies, <PROCESS>_IDENTITY_KEY and <PROCESS>_PUBLIC_KEY from
# `banyan identity new --process <process>` (the key is that process's only; the public keys
# are no secret, kept here so that one file carries everything).
#
# `banyan` is BANYAN_BIN if set (a command, e.g. "docker run --rm banyan:local"), else the one
# on the PATH, else the image APP_IMAGE (default banyan:local) through docker.
set -euo pipefail

die() { echo "gen-secrets: $*" >&2; exit 1; }

if [ -n "${BANYAN_BIN:-}" ]; then
    read -r -a banyan <<<"$BANYAN_BIN"
elif command -v banyan >/dev/null 2>&1; then
    banyan=(banyan)
elif command -v docker >/dev/null 2>&1; then
    banyan=(docker run --rm "${APP_IMAGE:-banyan:local}")
else
    die "no banyan: set BANYAN_BIN, put banyan on the PATH, or build the image (deploy/README.md)"
fi

random_base64() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
random_hex() { od -An -v -tx1 -N "$1" /dev/urandom | tr -d ' \n'; }

# `banyan identity new --process NAME` prints (crates/app/src/cli.rs):
#   # For process `NAME` only, secret: BANYAN_TOPOLOGY__IDENTITY__KEY, or
#   # [topology.identity] key = "<key>"
#   # For every process's configuration:
#   [topology.identity.public_keys]
#   NAME = "<public key>"
identity() {
    local process=$1 out key public
    out=$("${banyan[@]}" identity new --process "$process") ||
        die "\`${banyan[*]} identity new --process $process\` failed"
    key=$(sed -n 's/^# \[topology\.identity\] key = "\(.*\)"$/\1/p' <<<"$out")
    public=$(sed -n "s/^${process} = \"\\(.*\\)\"\$/\\1/p" <<<"$out")
    [ -n "$key" ] && [ -n "$public" ] || die "unexpected output of identity new: $out"
    local upper
    upper=$(tr '[:lower:]' '[:upper:]' <<<"$process")
    printf '%s_IDENTITY_KEY=%s\n%s_PUBLIC_KEY=%s\n' "$upper" "$key" "$upper" "$public"
}

echo "# Banyan's deployment secrets, made by deploy/gen-secrets.sh on $(date -u +%Y-%m-%d)."
echo "# Private: never commit this file (deploy/compose/.gitignore keeps .env out)."
echo "JWT_SECRET=$(random_base64 48)"
echo "POSTGRES_PASSWORD=$(random_hex 24)"
echo "ADMIN_PASSWORD=$(random_base64 18)"
for process in main payments inventory; do
    identity "$process"
done
for process in MAIN PAYMENTS INVENTORY; do
    echo "NATS_${process}_PASSWORD=$(random_hex 24)"
done
