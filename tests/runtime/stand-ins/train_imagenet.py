"""Stand-in for NVIDIA's train_imagenet.py in the test images: a replay of a published run.

It is bind-mounted over the real file, so everything else NVIDIA's image holds runs for real:
run_and_time.sh starts it (through mlperf-common's bindpcie) on every task, and every task
imports NVIDIA's own `mlperf_log_utils` (which starts MPI, as the real program does). Rank 0 then
logs the events of one published result log through NVIDIA's logger, time-compressed, with the
original spacing of time_ms (so the time to train is the published one). The job itself logs the
submission and cache_clear events; the replay leaves them out.

  REPLAY_DIR   folder of result_*.txt files; the k-th run of a log folder replays the k-th file
  REPLAY_WALL  wall-clock seconds one replayed run takes (default 1)
"""

import fcntl
import glob
import os
import sys

sys.path.insert(0, "/hpcrepro-test")
import mlperf_log_utils

from mllog_replay import JOB_KEYS, read_events, replay

COUNTER = "/results/.replayed"


def next_log() -> str:
    """The next result file of REPLAY_DIR for this log folder (/results), in name order."""
    logs = sorted(glob.glob(os.path.join(os.environ["REPLAY_DIR"], "result_*.txt")))
    with open(COUNTER, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        done = len(handle.read().splitlines())
        handle.write(f"{done}\n")
    return logs[done % len(logs)]


def emitter():
    """NVIDIA's logger of this round: mlperf-common's wrapper (r3.0 on) or mllog (r2.1)."""
    logger = mlperf_log_utils.mllogger
    calls = {"INTERVAL_START": logger.start, "INTERVAL_END": logger.end}

    def emit(kind, key, value, metadata, time_ms):
        calls.get(kind, logger.event)(key=key, value=value, metadata=metadata, time_ms=time_ms)

    return emit


def main() -> int:
    if int(os.environ.get("SLURM_PROCID", "0")) != 0:
        return 0
    events = read_events(next_log(), JOB_KEYS)
    span_s = (int(events[-1]["time_ms"]) - int(events[0]["time_ms"])) / 1000.0
    wall = max(float(os.environ.get("REPLAY_WALL", "1")), 0.001)
    replay(events, emitter(), speedup=max(span_s / wall, 1.0))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
