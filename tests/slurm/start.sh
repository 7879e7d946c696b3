#!/usr/bin/env bash
# Start a real two-node Slurm cluster on this machine for the tests: munge, MariaDB, slurmdbd,
# slurmctld and two slurmd (node1, node2) sharing localhost on their own ports.
#
# Everything (config, state, logs, pid files, database) lives under one folder,
# $HPCREPRO_SLURM_DIR (default /tmp/hpcrepro-slurm). The script writes $DIR/env.sh; source it
# to talk to the cluster. Idempotent: when the cluster already answers it says so and exits 0.
# tests/slurm/stop.sh stops exactly the processes started here (by their pid files).
# Ports: HPCREPRO_SLURMCTLD_PORT, HPCREPRO_SLURMDBD_PORT, HPCREPRO_MARIADB_PORT and
# HPCREPRO_NODE_PORTS (the two slurmd, "A-B"), so a second cluster can run beside the first.
# When HPCREPRO_SLURM_STARTED_FLAG names a file, it is created only if this call started the
# cluster, so a caller can stop the cluster at exit only when it was the one that started it.
# When HPCREPRO_RUNTIME_DIR names a build of tests/runtime/build.sh, pyxis is loaded into the
# cluster (plugstack.conf beside slurm.conf) and each node gets enroot with its own data, runtime
# and cache folders (see "Container runtime" below); a pyxis that does not load stops the script.
set -euo pipefail

DIR="${HPCREPRO_SLURM_DIR:-/tmp/hpcrepro-slurm}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER=hpcrepro
CTLD_PORT="${HPCREPRO_SLURMCTLD_PORT:-17817}"
DBD_PORT="${HPCREPRO_SLURMDBD_PORT:-17819}"
DB_PORT="${HPCREPRO_MARIADB_PORT:-17306}"
NODE_PORTS="${HPCREPRO_NODE_PORTS:-17001-17002}"
RUNTIME="${HPCREPRO_RUNTIME_DIR:-}"
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd-node1 slurmd-node2)

alive() {  # alive NAME: the daemon recorded in $DIR/run/NAME.pid is running
    local pidfile="$DIR/run/$1.pid"
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

cluster_answers() {
    [ -f "$DIR/env.sh" ] || return 1
    for daemon in "${DAEMONS[@]}"; do alive "$daemon" || return 1; done
    # a cluster started without the runtime asked for now (or with another build) is restarted
    if [ -n "$RUNTIME" ]; then
        grep -qF "$RUNTIME/spank_pyxis.so" "$DIR/etc/plugstack.conf" 2>/dev/null || return 1
    elif [ -e "$DIR/etc/plugstack.conf" ]; then
        return 1
    fi
    SLURM_CONF="$DIR/etc/slurm.conf" timeout 10 scontrol ping >/dev/null 2>&1
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "test Slurm: $what did not come up within ${limit}s; logs in $DIR/log" >&2
            tail -n 20 "$DIR"/log/* >&2 || true
            exit 1
        fi
        sleep 0.3
    done
}

launch() {  # launch NAME COMMAND...: run a daemon in the foreground of its own session, record its pid
    local name=$1
    shift
    setsid "$@" >"$DIR/log/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/run/$name.pid"
}

if cluster_answers; then
    echo "test Slurm: already running (source $DIR/env.sh)"
    exit 0
fi

for tool in munged munge unmunge mariadbd mariadb-install-db mariadb mariadb-admin slurmdbd slurmctld \
    slurmd sacctmgr scontrol sinfo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test Slurm: '$tool' is missing; run tests/slurm/install.sh as root first" >&2
        exit 1
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "test Slurm: start.sh must run as root (slurmd starts jobs as their owner)" >&2
    exit 1
fi

# A half-started or stale cluster: stop what is left of it, then start from a clean folder.
# Only a folder this script made (it holds the marker) is ever deleted.
MARKER="$DIR/.hpcrepro-test-slurm"
if [ -e "$DIR" ] && [ ! -e "$MARKER" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    echo "test Slurm: $DIR exists and was not made by start.sh; set HPCREPRO_SLURM_DIR to a new folder" >&2
    exit 1
fi
"$HERE/stop.sh" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,run,log,state,spool,munge,mysql,tmp}
touch "$MARKER"
chmod 755 "$DIR"
chmod 755 "$DIR/munge"

# --- munge: its own key and socket, so a system munged (if any) is never touched.
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
MUNGE_SOCKET="$DIR/munge/munge.socket"
launch munged munged --foreground --force --key-file="$DIR/munge/munge.key" \
    --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed" --log-file="$DIR/log/munged.log"
wait_for 20 "munged" bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"

# --- MariaDB on its own TCP port and socket, for slurmdbd.
DB_SOCKET="$DIR/mysql.sock"
mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
    --skip-test-db >"$DIR/log/mariadb-install.out" 2>&1
launch mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DB_SOCKET" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$DIR/mysql/mariadbd.pid" \
    --log-error="$DIR/log/mariadbd.log" --skip-log-bin --innodb-buffer-pool-size=32M \
    --innodb-log-file-size=16M --innodb-flush-log-at-trx-commit=0
wait_for 60 "MariaDB" mariadb-admin --no-defaults --socket="$DB_SOCKET" -uroot ping
mariadb --no-defaults --socket="$DB_SOCKET" -uroot <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- Slurm configuration.
HOST="$(hostname -s)"
cat >"$DIR/etc/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.daemon.pid
SlurmdPidFile=$DIR/run/slurmd-%n.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,defer_batch
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# Clients pick the munge socket for slurmdbd connections from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
InactiveLimit=0
MessageTimeout=20
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=node[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$NODE_PORTS] CPUs=16 Boards=1 SocketsPerBoard=1 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=batch Nodes=node[1-2] Default=NO MaxTime=120 MaxNodes=2 State=UP
CONF
cat >"$DIR/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.daemon.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$DIR/etc/slurmdbd.conf"
cat >"$DIR/env.sh" <<ENV
# Source this file to use the hpcrepro test Slurm cluster.
export SLURM_CONF=$DIR/etc/slurm.conf
ENV
export SLURM_CONF="$DIR/etc/slurm.conf"

# --- slurmdbd, then register the cluster before slurmctld starts.
launch slurmdbd slurmdbd -D
wait_for 60 "slurmdbd" sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true

# --- slurmctld and the two slurmd.
launch slurmctld slurmctld -D -i
wait_for 60 "slurmctld" scontrol ping
mkdir -p "$DIR/spool/node1" "$DIR/spool/node2"

# --- Container runtime: real pyxis and enroot (tests/runtime/build.sh).
# Both nodes share this host's file system, so each gets its own enroot data, runtime, cache and
# temp folders. pyxis runs `enroot` with the job's environment plus slurmstepd's PATH, so each
# slurmd starts with a folder of its own first on PATH, holding an `enroot` that sets that node's
# folders.
node_path() { echo "$PATH"; }
if [ -n "$RUNTIME" ]; then
    if [ ! -f "$RUNTIME/spank_pyxis.so" ] || [ ! -x "$RUNTIME/prefix/bin/enroot" ]; then
        echo "test Slurm: $RUNTIME holds no pyxis/enroot build; run tests/runtime/build.sh" >&2
        exit 1
    fi
    mkdir -p "$DIR/pyxis"
    for node in node1 node2; do
        mkdir -p "$DIR/enroot/$node"/{data,run,cache,tmp} "$DIR/nodes/$node"
        cat >"$DIR/nodes/$node/enroot" <<WRAPPER
#!/bin/sh
# enroot of test node $node: this node's own folders (two test nodes share one host).
export ENROOT_DATA_PATH="$DIR/enroot/$node/data" ENROOT_RUNTIME_PATH="$DIR/enroot/$node/run"
export ENROOT_CACHE_PATH="$DIR/enroot/$node/cache" ENROOT_TEMP_PATH="$DIR/enroot/$node/tmp"
PATH="$RUNTIME/prefix/bin:\$PATH"  # enroot runs its helpers (enroot-nsenter...) from PATH
exec enroot "\$@"
WRAPPER
        chmod 755 "$DIR/nodes/$node/enroot"
    done
    # Commands a job runs itself (the cleanup's `enroot list`) use the enroot on the login PATH,
    # as on a real cluster: /usr/local/bin/enroot picks the node's enroot of the cluster the
    # job runs on (from SLURM_CONF and SLURMD_NODENAME, which Slurm sets in every job). It is
    # installed only where no other enroot is.
    dispatcher=/usr/local/bin/enroot
    if [ ! -e "$dispatcher" ] || grep -q hpcrepro-test-enroot "$dispatcher" 2>/dev/null; then
        cat >"$dispatcher" <<'DISPATCH'
#!/bin/sh
# hpcrepro-test-enroot: the enroot of the hpcrepro test-cluster node a job step runs on.
cluster="$(dirname "$(dirname "${SLURM_CONF:?not in a test-cluster job}")")"
exec "$cluster/nodes/${SLURMD_NODENAME:?not in a test-cluster job}/enroot" "$@"
DISPATCH
        chmod 755 "$dispatcher"
    else
        echo "test Slurm: $dispatcher is another enroot; jobs' own enroot commands use it" >&2
    fi
    echo "required $RUNTIME/spank_pyxis.so runtime_path=$DIR/pyxis" >"$DIR/etc/plugstack.conf"
    node_path() { echo "$DIR/nodes/$1:$PATH"; }
fi
launch slurmd-node1 env PATH="$(node_path node1)" slurmd -D -N node1
launch slurmd-node2 env PATH="$(node_path node2)" slurmd -D -N node2
wait_for 60 "slurmd on node1 and node2" bash -c \
    "[ \"\$(sinfo -h -N -p debug -o '%N %t' | grep -c -E ' (idle|mix|alloc)$')\" -eq 2 ]"
if [ -n "$RUNTIME" ]; then
    if ! srun --help 2>&1 | grep -q -- --container-image; then
        echo "test Slurm: pyxis did not load: srun --help lists no --container-image" \
            "($DIR/etc/plugstack.conf names $RUNTIME/spank_pyxis.so)" >&2
        srun --help 2>&1 | grep -i -E "spank|pyxis|error" | head -n 5 >&2 || true
        exit 1
    fi
    echo "test Slurm: pyxis $RUNTIME/spank_pyxis.so loaded; enroot data under $DIR/enroot"
fi
if [ -n "${HPCREPRO_SLURM_STARTED_FLAG:-}" ]; then
    touch "$HPCREPRO_SLURM_STARTED_FLAG"
fi
echo "test Slurm: running; source $DIR/env.sh (SLURM_CONF=$SLURM_CONF)"
