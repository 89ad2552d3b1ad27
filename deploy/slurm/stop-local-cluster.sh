#!/usr/bin/env bash
# Stop the daemons that start-local-cluster.sh DIR started (listed in DIR/pids/started), newest first, by their pids.
#
#   deploy/slurm/stop-local-cluster.sh DIR
#
# Jobs still queued or running are cancelled first. The folder (configuration, accounting database,
# logs) is left for inspection; delete it to start from nothing.
set -uo pipefail

DIR=${1:?usage: $0 DIR}
DIR=$(cd "$DIR" && pwd) || exit 1
LIST="$DIR/pids/started"
[ -f "$LIST" ] || { echo "nothing was started from $DIR" >&2; exit 0; }
export SLURM_CONF="$DIR/slurm.conf"

grep -q '^slurmctld ' "$LIST" && scancel --full --quiet --user="$(id -un)" 2>/dev/null

tac "$LIST" | while read -r name pidfile; do
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
    # sshd: end its sessions first (their connections close, so clients' ssh ControlMasters exit too).
    [ "$name" = sshd ] && pkill -TERM -P "$pid" 2>/dev/null
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name (pid $pid) did not stop on SIGTERM within 10 s; sending SIGKILL" >&2
        kill -KILL "$pid"
    fi
done
: >"$LIST"
