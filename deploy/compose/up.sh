#!/usr/bin/env bash
# Bring the federation of compose.yaml up, tokens first:
#   1. a random database password, as two secrets (postgres's and the controller's pgpass);
#   2. postgres and the controller; wait until `strata health` says the controller serves;
#   3. inside the controller's container (it holds the admin token), `strata token create`
#      for each combiner (--host: the name it advertises) and client, and its ca.crt;
#   4. everything else.
# Secrets are files in $STRATA_SECRETS (default ./secrets), mode 0400, owned by the uid of
# the container that reads them. Run it again to start what is not running: existing
# secrets are kept. Needs podman-compose (pip install podman-compose) or set COMPOSE.
# Environment: STRATA_SECRETS, STRATA_REST_PORT, STRATA_IMAGE, STRATA_APP, FASHION_MNIST_DIR,
# COMPOSE_PROJECT_NAME (several federations side by side), STRATA_WAIT_SECONDS (120).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
compose=(${COMPOSE:-podman-compose} --file "$here/compose.yaml")
[ -n "${COMPOSE_PROJECT_NAME:-}" ] && compose+=(--project-name "$COMPOSE_PROJECT_NAME")
secrets=${STRATA_SECRETS:-$here/secrets}
export STRATA_SECRETS=$secrets
wait_seconds=${STRATA_WAIT_SECONDS:-120}
TIER_UID=10001 POSTGRES_UID=10002
COMBINERS=(combiner-a combiner-b)
CLIENTS=(client-0 client-1 client-2 client-3)
say() { echo "up.sh: $*" >&2; }

install -d -m 0700 "$secrets"
if [ ! -s "$secrets/postgres-password" ]; then
  password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  (umask 077
   printf '%s\n' "$password" > "$secrets/postgres-password"
   printf 'postgres:5432:strata:strata:%s\n' "$password" > "$secrets/database.pgpass")
  chown "$POSTGRES_UID" "$secrets/postgres-password"; chmod 0400 "$secrets/postgres-password"
  chown "$TIER_UID" "$secrets/database.pgpass"; chmod 0400 "$secrets/database.pgpass"
fi

# The tiers' secrets must exist for compose to start postgres and the controller; the
# ones not issued yet are placeholders until step 3.
for name in "${COMBINERS[@]}" "${CLIENTS[@]}"; do [ -e "$secrets/$name.token" ] || : > "$secrets/$name.token"; done
[ -e "$secrets/ca.crt" ] || : > "$secrets/ca.crt"

"${compose[@]}" up -d postgres controller >/dev/null
say "waiting for the controller (at most $wait_seconds s)"
deadline=$((SECONDS + wait_seconds))
until "${compose[@]}" exec -T controller strata health >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    "${compose[@]}" logs --tail 20 controller >&2 || true
    say "the controller did not become healthy within $wait_seconds s (logs above)"; exit 1
  fi
  sleep 1
done

admin=("${compose[@]}" exec -T controller strata)
issue() {  # issue NAME ROLE [--host H]: a token into $secrets/NAME.token, once
  local name=$1 role=$2; shift 2
  [ -s "$secrets/$name.token" ] && return 0
  (umask 077; "${admin[@]}" token create --role "$role" --name "$name" "$@" > "$secrets/$name.token.new")
  mv "$secrets/$name.token.new" "$secrets/$name.token"
  chown "$TIER_UID" "$secrets/$name.token"; chmod 0400 "$secrets/$name.token"
}
for name in "${COMBINERS[@]}"; do issue "$name" combiner --host "$name"; done
for name in "${CLIENTS[@]}"; do issue "$name" client; done
"${compose[@]}" exec -T controller cat /var/lib/stratafl/controller/trust/ca.crt > "$secrets/ca.crt.new"
mv "$secrets/ca.crt.new" "$secrets/ca.crt"; chmod 0444 "$secrets/ca.crt"
say "issued the tokens and the CA certificate into $secrets"

"${compose[@]}" up -d >/dev/null
say "up: REST API at https://${STRATA_REST_BIND:-127.0.0.1}:${STRATA_REST_PORT:-8443} (CA: $secrets/ca.crt)"
