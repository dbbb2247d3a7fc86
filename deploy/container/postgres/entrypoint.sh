#!/bin/sh
# Start PostgreSQL on the container's network with one database for the controller.
#
# At the first start (an empty $PGDATA volume) it makes the cluster and the role
# $POSTGRES_USER (default strata) owning the database $POSTGRES_DB (default strata), whose
# password is read from the file $POSTGRES_PASSWORD_FILE (a secret). Connections:
#   - over the network: that role, that database, scram-sha-256 password, and only from
#     the networks the container is attached to (pg_hba "samenet"); everything else is
#     rejected;
#   - inside the container: the postgres superuser over the local socket (peer).
set -eu

: "${POSTGRES_USER:=strata}"
: "${POSTGRES_DB:=strata}"
: "${POSTGRES_PASSWORD_FILE:?set POSTGRES_PASSWORD_FILE to a file holding the password of $POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -r "$POSTGRES_PASSWORD_FILE" ] || { echo "error: cannot read $POSTGRES_PASSWORD_FILE: hand it to uid $(id -u)" >&2; exit 1; }
    password=$(head -n 1 "$POSTGRES_PASSWORD_FILE")
    [ -n "$password" ] || { echo "error: $POSTGRES_PASSWORD_FILE is empty" >&2; exit 1; }
    initdb --pgdata="$PGDATA" --username=postgres --auth-local=peer --auth-host=reject \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    cat > "$PGDATA/pg_hba.conf" <<HBA
# TYPE  DATABASE         USER              ADDRESS   METHOD
local   all              postgres                    peer
host    $POSTGRES_DB     $POSTGRES_USER    samenet   scram-sha-256
host    all              all               all       reject
HBA
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" --wait --silent start
    escaped=$(printf "%s" "$password" | sed "s/'/''/g")
    psql --quiet --no-psqlrc --username=postgres --dbname=postgres --set=ON_ERROR_STOP=1 <<SQL
CREATE ROLE "$POSTGRES_USER" LOGIN PASSWORD '$escaped';
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
    pg_ctl --pgdata="$PGDATA" --wait --silent stop
    echo "stratafl-postgres: made the cluster, role $POSTGRES_USER and database $POSTGRES_DB"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql \
    -c password_encryption=scram-sha-256 "$@"
