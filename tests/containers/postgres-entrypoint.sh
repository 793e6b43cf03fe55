#!/bin/sh
# First start: a cluster whose postgres user has POSTGRES_PASSWORD, reachable over TCP with
# it, holding POSTGRES_DB. Then the server in the foreground, so it gets the stop signal.
set -eu
bin=$(echo /usr/lib/postgresql/*/bin)
export PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" >"$password_file"
    "$bin/initdb" --username=postgres --pwfile="$password_file" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm "$password_file"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ -n "${POSTGRES_DB:-}" ]; then
        echo "create database \"$POSTGRES_DB\"" | "$bin/postgres" --single -j postgres >/dev/null
    fi
fi
exec "$bin/postgres" -c listen_addresses='*'
