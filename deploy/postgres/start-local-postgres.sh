#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback, for tests and demos of the PostgreSQL Dagster storage.
#
#   deploy/postgres/start-local-postgres.sh DIR [PORT]    (default port 55432)
#
# Uses the system's PostgreSQL (Debian package `postgresql`, installed with apt-get if missing and
# run as root). The cluster lives in DIR/data with trust authentication on 127.0.0.1 only; the
# server runs as the `postgres` system user when started by root (PostgreSQL refuses root). Prints
# the URL (postgresql+psycopg2://...) of the database `dagster` for XFEL_DAGSTER_POSTGRES_URL. Stop it with
# stop-local-postgres.sh DIR.
set -euo pipefail

DIR=${1:?usage: $0 DIR [PORT]}
PORT=${2:-55432}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
BIN=$(find_bin)
if [ -z "$BIN" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "PostgreSQL is not installed; run as root to install it, or: apt-get install postgresql" >&2
        exit 1
    fi
    echo "installing PostgreSQL from the system packages ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    BIN=$(find_bin)
fi

AS=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown postgres "$DIR"
    chmod 0755 "$DIR"
    AS=(runuser -u postgres --)
fi

if [ ! -f "$DIR/data/PG_VERSION" ]; then
    "${AS[@]}" "$BIN/initdb" --pgdata="$DIR/data" --username=xfel --auth=trust --encoding=UTF8 >"$DIR/initdb.log"
fi
"${AS[@]}" "$BIN/pg_ctl" --pgdata="$DIR/data" --log="$DIR/postgres.log" --wait \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c max_connections=200" start >/dev/null
"${AS[@]}" "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U xfel -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='dagster'" \
    | grep -q 1 || "${AS[@]}" "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U xfel dagster
# SQLAlchemy 2.1 (Dagster's storage layer) takes a bare postgresql:// URL as psycopg 3; dagster-postgres ships psycopg2.
echo "postgresql+psycopg2://xfel@127.0.0.1:$PORT/dagster"
