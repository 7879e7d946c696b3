#!/usr/bin/env bash
# The test command (README, .ci/run): install what the tests need, start the two-node test
# Slurm cluster when running as root, run the whole suite, stop only what this script started.
#
#   bash scripts/test.sh [pytest args...]
#
# As root the test cluster runs real pyxis and enroot, built from ../shared/research/
# container-runtimes by tests/runtime/build.sh; a build or load that fails stops this script.
# As a non-root developer, system packages and Slurm are left alone and the Slurm tests skip
# with a reason (under CI=true they fail instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${HPCREPRO_VENV:-.venv}

if [[ $(id -u) -eq 0 ]]; then
    bash scripts/install-system-deps.sh
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch==2.13.0 is the CPU build this machine kind provides; the workload extra accepts it.
# DALI (its CPU operators) judges the prepared data and runs the workload's dali data path.
"$VENV/bin/python" -m pip install -q -e '.[dev,workload,dali]' torch==2.13.0

# Stop the test cluster at the end only if this run started it (a developer's running cluster
# is left alone).
started_flag=$(mktemp -u)
if [[ $(id -u) -eq 0 && -x tests/slurm/start.sh ]]; then
    HPCREPRO_RUNTIME_DIR="$(bash tests/runtime/build.sh)"
    export HPCREPRO_RUNTIME_DIR
    HPCREPRO_SLURM_STARTED_FLAG=$started_flag bash tests/slurm/start.sh
fi
stop_slurm() {
    if [[ -e $started_flag ]]; then
        bash tests/slurm/stop.sh || true
        rm -f "$started_flag"
    fi
}
trap stop_slurm EXIT

export PATH="$PWD/$VENV/bin:$PATH"
"$VENV/bin/python" -m pytest -q -ra "$@"
