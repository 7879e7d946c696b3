"""A tiny stand-in for ResNet training, used as `site.train_command` in the Slurm tests.

Rank 0 writes real MLLOG lines through mlperf-logging's own `mllog` (run_start, one eval_accuracy
per epoch, run_stop); every rank leaves a marker file naming its node when FAKE_TRAIN_MARKERS is
set. Behaviour comes from the environment:
  FAKE_TRAIN_EPOCHS   epochs to log (default 3)
  FAKE_TRAIN_SLEEP    seconds per epoch (default 0.1)
  FAKE_TRAIN_STATUS   run_stop status: success (default) or aborted
  FAKE_TRAIN_HOLD     while this file exists, wait after the first epoch (at most 120 s)
  FAKE_TRAIN_EXIT     exit code after run_stop (default 0)
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path


def main() -> int:
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    markers = os.environ.get("FAKE_TRAIN_MARKERS")
    if markers:
        node = os.environ.get("SLURMD_NODENAME", socket.gethostname())
        job = os.environ.get("SLURM_JOB_ID", "local")
        Path(markers, f"{job}-{rank}-{node}").write_text(f"{os.getpid()}\n")
    if rank != 0:
        return 0
    from mlperf_logging import mllog
    from mlperf_logging.mllog import constants

    mllog.config(filename=os.devnull)
    logger = mllog.get_mllogger()
    epochs = int(os.environ.get("FAKE_TRAIN_EPOCHS", "3"))
    pause = float(os.environ.get("FAKE_TRAIN_SLEEP", "0.1"))
    status = os.environ.get("FAKE_TRAIN_STATUS", constants.SUCCESS)
    hold = os.environ.get("FAKE_TRAIN_HOLD")
    logger.event(key=constants.SUBMISSION_BENCHMARK, value=constants.RESNET)
    logger.start(key=constants.INIT_START)
    logger.end(key=constants.INIT_STOP)
    logger.start(key=constants.RUN_START)
    for epoch in range(1, epochs + 1):
        logger.start(key=constants.EPOCH_START, metadata={"epoch_num": epoch})
        time.sleep(pause)
        accuracy = 0.76 * epoch / epochs if status == constants.SUCCESS else 0.5 * epoch / epochs
        logger.event(
            key=constants.EVAL_ACCURACY, value=round(accuracy, 4), metadata={"epoch_num": epoch}
        )
        sys.stdout.flush()
        deadline = time.monotonic() + 120
        while hold and os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.2)
    logger.end(key=constants.RUN_STOP, metadata={"status": status})
    return int(os.environ.get("FAKE_TRAIN_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
