#!/usr/bin/env bash
# Start a real single-node SLURM cluster with accounting on loopback, for tests and demos of `compute: slurm`.
#
#   deploy/slurm/start-local-cluster.sh DIR [SSH_PORT]    (default ssh port 2222)
#
# Uses the system's packages (Debian: munge, slurmctld, slurmd, slurm-client, slurmdbd, mariadb-server,
# openssh-server; installed with apt-get when missing, as root). Everything lives in DIR and listens on
# 127.0.0.1 only: slurm.conf and slurmdbd.conf, a MariaDB for the accounting (sacct), an sshd that
# accepts a throwaway key (DIR/ssh/id_ed25519) for the current user and sets SLURM_CONF for its
# sessions, and the daemons' pid files (DIR/pids). Each daemon this script starts is listed in
# DIR/pids/started; stop-local-cluster.sh DIR stops exactly those, by their pids.
# Prints `export SLURM_CONF=...` lines and the SSH settings (also written to DIR/cluster.env).
set -euo pipefail

DIR=${1:?usage: $0 DIR [SSH_PORT]}
SSH_PORT=${2:-2222}
DB_PORT=${XFEL_SLURM_DB_PORT:-3307}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
mkdir -p "$DIR"/{state,spool,pids,log,ssh,mysql,tmp}
# The services run as their own users (mysql, slurm): a $TMPDIR of ours (0700, or root's) is not
# theirs to write, and mariadb-install-db fails silently on it. They get a shared one in DIR.
chmod 1777 "$DIR/tmp"
export TMPDIR="$DIR/tmp"
chmod 0755 "$DIR"
: >"$DIR/pids/started"

if [ "$(id -u)" != 0 ]; then
    echo "the local cluster runs its daemons as root (SlurmUser=root); run this script as root" >&2
    exit 1
fi

need=()
for pair in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client slurmdbd:slurmdbd \
            mariadbd:mariadb-server sshd:openssh-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from the system packages ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$DIR/log/apt.log" 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$DIR/log/apt.log" 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >>"$DIR/log/apt.log" 2>&1
    }
fi

started() { echo "$1 $2" >>"$DIR/pids/started"; }
wait_for_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

# --- munge (authentication); reuse one that already runs
if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -f /etc/munge/munge.key ] || { runuser -u munge -- /usr/sbin/mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
    runuser -u munge -- /usr/sbin/munged
    wait_for_file /run/munge/munged.pid
    started munged /run/munge/munged.pid
fi

# --- MariaDB for slurmdbd, in a data folder of its own
DB_SOCKET="$DIR/mysql/mysqld.sock"
chown mysql:mysql "$DIR/mysql"
if [ ! -d "$DIR/mysql/data/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$DIR/mysql/data" --auth-root-authentication-method=socket \
        >"$DIR/log/mariadb-install.log" 2>&1
fi
/usr/sbin/mariadbd --user=mysql --datadir="$DIR/mysql/data" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --socket="$DB_SOCKET" --pid-file="$DIR/mysql/mariadbd.pid" --log-error="$DIR/mysql/mariadb.log" \
    --skip-name-resolve >/dev/null 2>&1 &
wait_for_file "$DIR/mysql/mariadbd.pid"
started mariadbd "$DIR/mysql/mariadbd.pid"
for _ in $(seq 100); do mariadb --socket="$DB_SOCKET" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
DB_PASS=xfel-local-cluster
mariadb --socket="$DB_SOCKET" <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- SLURM configuration
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat >"$DIR/slurm.conf" <<CONF
ClusterName=xfel-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/pids/slurmctld.pid
SlurmdPidFile=$DIR/pids/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
MinJobAge=300
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
# slurmdbd has no -f flag: it reads slurmdbd.conf beside $SLURM_CONF.
cat >"$DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DIR/pids/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
chmod 600 "$DIR/slurmdbd.conf"
export SLURM_CONF="$DIR/slurm.conf"

/usr/sbin/slurmdbd
wait_for_file "$DIR/pids/slurmdbd.pid"
started slurmdbd "$DIR/pids/slurmdbd.pid"
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -n list cluster format=cluster | grep -qw xfel-local || sacctmgr -i add cluster xfel-local >/dev/null

/usr/sbin/slurmctld
wait_for_file "$DIR/pids/slurmctld.pid"
started slurmctld "$DIR/pids/slurmctld.pid"
/usr/sbin/slurmd -N localhost
wait_for_file "$DIR/pids/slurmd.pid"
started slurmd "$DIR/pids/slurmd.pid"
for _ in $(seq 150); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    [ "$state" = down ] || [ "$state" = "down*" ] && scontrol update nodename=localhost state=resume 2>/dev/null || true
    sleep 0.2
done
[ "$(sinfo -h -o %T)" = idle ] || { echo "the node did not come up (sinfo: $(sinfo -h -o %T)); see $DIR/log" >&2; exit 1; }

# --- sshd on loopback: the login node that dagster-slurm submits through
[ -f "$DIR/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/host_ed25519"
[ -f "$DIR/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/id_ed25519" -C xfel-local-cluster
cp "$DIR/ssh/id_ed25519.pub" "$DIR/ssh/authorized_keys"
chmod 600 "$DIR/ssh/authorized_keys"
cat >"$DIR/ssh/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $DIR/ssh/host_ed25519
PidFile $DIR/pids/sshd.pid
AuthorizedKeysFile $DIR/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 64
MaxStartups 64:30:128
SetEnv SLURM_CONF=$DIR/slurm.conf
Subsystem sftp internal-sftp
CONF
mkdir -p /run/sshd
/usr/sbin/sshd -f "$DIR/ssh/sshd_config" -E "$DIR/log/sshd.log"
wait_for_file "$DIR/pids/sshd.pid"
started sshd "$DIR/pids/sshd.pid"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$DIR/ssh/host_ed25519.pub")" >"$DIR/ssh/known_hosts"

cat >"$DIR/cluster.env" <<ENV
export SLURM_CONF=$DIR/slurm.conf
export XFEL_SLURM_SSH_HOST=127.0.0.1
export XFEL_SLURM_SSH_PORT=$SSH_PORT
export XFEL_SLURM_SSH_USER=$(id -un)
export XFEL_SLURM_SSH_KEY=$DIR/ssh/id_ed25519
export XFEL_SLURM_SSH_KNOWN_HOSTS=$DIR/ssh/known_hosts
ENV
cat "$DIR/cluster.env"
