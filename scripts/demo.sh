#!/usr/bin/env bash
# The main job on a fresh machine: install hpcrepro with its reference workload into .venv and
# run the end-to-end demo (synthetic ImageNet-shaped data -> RecordIO -> 5 training runs on the
# local backend -> MLPerf-style score and report). No GPU needed; besides the install, the demo
# takes about 1.5 minutes on 2 idle cores, 4-5 minutes on 2 busy ones (docs/workload.md).
#
#   bash scripts/demo.sh [hpcrepro demo options...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${HPCREPRO_VENV:-.venv}
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[workload]' torch==2.13.0
exec "$VENV/bin/hpcrepro" demo "$@"
