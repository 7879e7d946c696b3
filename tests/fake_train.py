"""A stand-in for a training program, used as `site.train_command` in the campaign tests.

Rank 0 replays a real published result log of the job's round (HPCREPRO_VERSION) through
mlperf-logging's own `mllog` (see `mllog_replay`), so its log passes the round's compliance rules
exactly as the published run did; the job script logs `cache_clear` itself, as for any training
program. Every rank leaves a marker file naming its node when FAKE_TRAIN_MARKERS is set.
Behaviour comes from the environment:
  FAKE_TRAIN_LOG      the result log to replay (default: a converged NVIDIA run of the round)
  FAKE_TRAIN_SLEEP    wall-clock seconds the whole run takes (default 0.5)
  FAKE_TRAIN_STATUS   success (default) or aborted (accuracy below the target, run_stop aborted)
  FAKE_TRAIN_HOLD     while this file exists, wait after the first epoch (at most 120 s)
  FAKE_TRAIN_EXIT     exit code after run_stop (default 0)
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mllog_replay import abort, mllog_emitter, read_events, replay  # noqa: E402
from shared_dir import shared_dir  # noqa: E402

SHARED = shared_dir()
RESULTS = SHARED / "research" / "mlperf-resnet-results"
# A converged run of each round whose result set passes mlperf-logging's checker.
ROUND_LOGS = {
    "r2.1": "v2.1/NVIDIA/dgxh100_preview/result_0.txt",
    "r3.0": "v3.0/NVIDIA/dgxh100_ngc23.04_mxnet/result_0.txt",
    "r3.1": "v3.1/NVIDIA/eos_n8_ngc23.09_mxnet/result_0.txt",
    "r4.0": "v4.0/NVIDIA/h200_ngc24.04_mxnet/result_0.txt",
}


def _hold(path: str | None) -> None:
    deadline = time.monotonic() + 120
    while path and os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.2)


def main() -> int:
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    markers = os.environ.get("FAKE_TRAIN_MARKERS")
    if markers:
        node = os.environ.get("SLURMD_NODENAME", socket.gethostname())
        job = os.environ.get("SLURM_JOB_ID", "local")
        Path(markers, f"{job}-{rank}-{node}").write_text(f"{os.getpid()}\n")
    if rank != 0:
        return 0
    log = os.environ.get("FAKE_TRAIN_LOG") or str(
        RESULTS / ROUND_LOGS[os.environ.get("HPCREPRO_VERSION", "r2.1")]
    )
    events = read_events(log, skip=["cache_clear"])
    if os.environ.get("FAKE_TRAIN_STATUS", "success") == "aborted":
        events = abort(events)
    wall = max(float(os.environ.get("FAKE_TRAIN_SLEEP", "0.5")), 0.001)
    span_s = (int(events[-1]["time_ms"]) - int(events[0]["time_ms"])) / 1000.0
    replay(
        events,
        mllog_emitter(),
        speedup=max(span_s / wall, 1.0),
        after_first_epoch=lambda: _hold(os.environ.get("FAKE_TRAIN_HOLD")),
    )
    sys.stdout.flush()
    return int(os.environ.get("FAKE_TRAIN_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
