#!/bin/bash
# PostgreSQL's first start (/docker-entrypoint-initdb.d, run once on an empty data directory):
# creates Banyan's per-module roles with a password.
#
# Why: with database.role_per_module (the default) each module connects as role
# banyan_<module>, with the URL of database.url where only the user name is replaced, so with
# the same password (crates/db/src/lib.rs, open_postgres). Banyan creates a missing role
# itself, but without a password: on a server that checks passwords (this image's pg_hba.conf:
# scram-sha-256 for every TCP connection) the module could then never log in. Made here first,
# with POSTGRES_PASSWORD, Banyan finds them and only hands each its schema.
#
# Changing POSTGRES_PASSWORD later: ALTER ROLE each banyan_<module> (and POSTGRES_USER) to the
# new one. An existing data directory skips this script: run it by hand once
# (`docker compose exec postgres bash /docker-entrypoint-initdb.d/10-banyan-roles.sh`, or
# `kubectl exec` into the StatefulSet's pod), or set BANYAN_DATABASE__ROLE_PER_MODULE=false
# (one role for every module, no boundary kept by the database).
set -euo pipefail
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}"
database=${POSTGRES_DB:-$POSTGRES_USER}
for module in users catalog inventory cart orders payments notifications; do
    psql -v ON_ERROR_STOP=1 -q --username "$POSTGRES_USER" --dbname "$database" \
        -v role="banyan_${module}" -v password="$POSTGRES_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')
\gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', :'password')
\gexec
SQL
done
echo "banyan: roles banyan_<module> ready in database ${database}"
