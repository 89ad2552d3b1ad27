#!/usr/bin/env bash
# Stop the daemons that start-local-cluster.sh DIR started (listed in DIR/pids/started), by their pids.
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

# In three waves, each stopped together: what talks to the accounting daemon, then the accounting
# daemon, then its database and munge.
wave() { case $1 in sshd|slurmd|slurmctld) echo 1 ;; slurmdbd) echo 2 ;; *) echo 3 ;; esac; }
# Running: a daemon that has exited stays a zombie until init reaps it (about 2 s in some containers).
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }
for w in 1 2 3; do
    pids=()
    names=()
    while read -r name pidfile; do
        [ "$(wave "$name")" = "$w" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null) || continue
        [ -n "$pid" ] && running "$pid" || continue
        # sshd: end its sessions first (their connections close, so clients' ssh ControlMasters exit too).
        [ "$name" = sshd ] && pkill -TERM -P "$pid" 2>/dev/null
        kill -TERM "$pid"
        pids+=("$pid")
        names+=("$name")
    done < <(tac "$LIST")
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}
        for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
        if running "$pid"; then
            echo "${names[$i]} (pid $pid) did not stop on SIGTERM within 10 s; sending SIGKILL" >&2
            kill -KILL "$pid"
        fi
    done
done
: >"$LIST"
