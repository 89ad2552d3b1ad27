#!/usr/bin/env bash
# Stop the server that start-local-postgres.sh started in DIR (by the pid in its postmaster.pid).
set -euo pipefail
DIR=${1:?usage: $0 DIR}
PIDFILE="$DIR/data/postmaster.pid"
[ -f "$PIDFILE" ] || { echo "no server running in $DIR" >&2; exit 0; }
PID=$(head -n 1 "$PIDFILE")
# Running: a server that has exited stays a zombie until init reaps it (about 2 s in some containers).
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }
kill -INT "$PID" 2>/dev/null || exit 0     # SIGINT: PostgreSQL's fast shutdown
for _ in $(seq 1 100); do
    running "$PID" || exit 0
    sleep 0.1
done
kill -KILL "$PID" 2>/dev/null || true
