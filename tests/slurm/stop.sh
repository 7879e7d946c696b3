#!/usr/bin/env bash
# Stop the test Slurm cluster started by tests/slurm/start.sh: only the processes whose pids it
# recorded in $HPCREPRO_SLURM_DIR/run (default /tmp/hpcrepro-slurm/run), newest first.
set -uo pipefail

DIR="${HPCREPRO_SLURM_DIR:-/tmp/hpcrepro-slurm}"
stopped=0

# End the cluster's jobs first, so their slurmstepd processes exit instead of outliving slurmd.
if [ -f "$DIR/etc/slurm.conf" ] && [ -s "$DIR/run/slurmctld.pid" ] &&
    kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF="$DIR/etc/slurm.conf"
    jobs="$(timeout 10 squeue -h -o %i 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086  # one job id per word
        timeout 10 scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 25); do
            [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null || true)" ] && break
            sleep 0.2
        done
    fi
fi
for name in slurmd-node2 slurmd-node1 slurmctld slurmdbd mariadbd munged; do
    pidfile="$DIR/run/$name.pid"
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    # The pid must still belong to that daemon (not a process that reused the number).
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${name%-node*}" ]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        stopped=$((stopped + 1))
    fi
    rm -f "$pidfile"
done
echo "test Slurm: stopped $stopped process(es) under $DIR"
