"""MLLOG lines through mlperf-logging's own `mllog`, with every key ruleset 4.0.0 checks for ResNet.

Only rank 0 prints (all ranks share one job log, and two ranks writing on one line would lose a
record). The division is decided from what actually ran: `closed` only for ResNet-50 at 224 pixels
with 1000 (or 1001) classes, ImageNet's 1,281,167 / 50,000 images and a target of at least 0.759;
`open` for everything else.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants, mllog

from hpcrepro.errors import UserError

IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_VAL_IMAGES = 50_000
BENCHMARK = "resnet"
MLPERF_TARGET = 0.759


class MLLogWriteError(UserError):
    """The MLLOG lines cannot be written: the run could never be scored, so it must not go on."""


class _CheckedStreamHandler(logging.StreamHandler):
    """A stream handler that remembers its first failed write instead of printing a traceback.

    logging's own handler prints a traceback for every failed record and carries on (and mllog
    swallows exceptions around its writes), so a run whose log goes to a full or read-only file
    system would train to the end and exit 0. `MLPerfLogger` checks `failure` after each line.
    """

    failure: MLLogWriteError | None = None

    def _destination(self) -> str:
        name = str(getattr(self.stream, "name", "the output stream"))
        try:
            return f"{name.strip('<>')} ({os.readlink(f'/proc/self/fd/{self.stream.fileno()}')})"
        except (AttributeError, OSError, ValueError):
            return name

    def handleError(self, record: logging.LogRecord) -> None:  # logging's name
        if self.failure is not None:
            return
        error = sys.exc_info()[1]
        reason = getattr(error, "strerror", None) or str(error)
        self.failure = MLLogWriteError(
            f"cannot write the MLLOG lines to {self._destination()}: {reason}",
            hint="a run without its log cannot be scored: free space on, or make writable, "
            "the file system the job's output goes to, then run again",
        )
        try:
            # What is still buffered can never be written; point the descriptor at /dev/null
            # so that Python's flush at exit does not fail (and print) a second time.
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
        except (AttributeError, OSError, ValueError):
            pass


class MLPerfLogger:
    """mllog's MLLogger, silent on ranks other than 0; call sites are the caller's, not ours."""

    def __init__(self, enabled: bool) -> None:
        logger = logging.getLogger(f"hpcrepro.mllog.{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        self._stream_handler = _CheckedStreamHandler(sys.stdout) if enabled else None
        logger.addHandler(self._stream_handler or logging.NullHandler())
        self.enabled = enabled
        # Call sites are logged relative to the source root ("hpcrepro/workload/loop.py").
        root = str(Path(__file__).resolve().parents[2])
        self._log = mllog.MLLogger(logger=logger, default_stack_offset=2, root_dir=root)

    def _written(self) -> None:
        if self._stream_handler is not None and self._stream_handler.failure is not None:
            raise self._stream_handler.failure

    def event(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        self._log.event(key=key, value=value, metadata=metadata)
        self._written()

    def start(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        self._log.start(key=key, value=value, metadata=metadata)
        self._written()

    def end(self, key: str, value: Any = None, metadata: dict | None = None) -> None:
        self._log.end(key=key, value=value, metadata=metadata)
        self._written()


def division_for(
    *,
    width: int,
    image_size: int,
    num_classes: int,
    target: float,
    train_samples: int,
    eval_samples: int,
) -> str:
    """closed only for ResNet-50 itself, trained on ImageNet's images to MLPerf's target."""
    resnet50 = width == 64 and image_size == 224 and num_classes in (1000, 1001)
    imagenet = train_samples == IMAGENET_TRAIN_IMAGES and eval_samples == IMAGENET_VAL_IMAGES
    return "closed" if resnet50 and imagenet and target >= MLPERF_TARGET else "open"


def log_submission(log: MLPerfLogger, *, org: str, platform: str, division: str) -> None:
    log.event(constants.SUBMISSION_BENCHMARK, BENCHMARK)
    log.event(constants.SUBMISSION_ORG, org)
    log.event(constants.SUBMISSION_DIVISION, division)
    log.event(constants.SUBMISSION_STATUS, "onprem")
    log.event(constants.SUBMISSION_PLATFORM, platform)


def log_hyperparameters(
    log: MLPerfLogger,
    *,
    global_batch: int,
    local_batch: int,
    lr: float,
    warmup_epochs: float,
    epochs: int,
    momentum: float,
    weight_decay: float,
    end_lr: float,
    poly_power: int,
    epsilon: float,
) -> None:
    log.event(constants.GLOBAL_BATCH_SIZE, global_batch)
    log.event(constants.GRADIENT_ACCUMULATION_STEPS, 1)
    log.event(constants.MODEL_BN_SPAN, local_batch)
    log.event(constants.OPT_NAME, "lars")
    log.event(constants.LARS_EPSILON, epsilon)
    log.event(constants.LARS_OPT_WEIGHT_DECAY, weight_decay)
    log.event(constants.LARS_OPT_MOMENTUM, momentum)
    log.event(constants.LARS_OPT_BASE_LEARNING_RATE, lr)
    log.event(constants.LARS_OPT_LEARNING_RATE_WARMUP_EPOCHS, warmup_epochs)
    log.event(constants.LARS_OPT_LR_DECAY_STEPS, epochs)
    log.event(constants.LARS_OPT_END_LR, end_lr)
    log.event(constants.LARS_OPT_LR_DECAY_POLY_POWER, poly_power)
