"""Which division a run may claim; a log that cannot be written stops the run."""

from __future__ import annotations

import errno
import io
import sys

import pytest

from hpcrepro.workload.mlperf import MLLogWriteError, MLPerfLogger, division_for

FULL = {
    "width": 64,
    "image_size": 224,
    "num_classes": 1000,
    "target": 0.759,
    "train_samples": 1_281_167,
    "eval_samples": 50_000,
}


def test_only_resnet50_on_imagenet_to_the_mlperf_target_is_closed():
    assert division_for(**FULL) == "closed"
    assert division_for(**{**FULL, "num_classes": 1001}) == "closed"
    for change in (
        {"width": 16},
        {"image_size": 128},
        {"num_classes": 10},
        {"target": 0.7},
        {"train_samples": 1000},
        {"eval_samples": 200},
    ):
        assert division_for(**{**FULL, **change}) == "open", change


class FullStream(io.StringIO):
    """stdout on a full file system: every write fails."""

    name = "<stdout>"

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_unwritable_log_stops_at_the_first_line_with_one_message(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", FullStream())
    log = MLPerfLogger(enabled=True)
    with pytest.raises(
        MLLogWriteError, match="cannot write the MLLOG lines to <stdout>: No space"
    ) as caught:
        log.event("submission_benchmark", "resnet")
    assert "cannot be scored" in (caught.value.hint or "")
    assert "Logging error" not in capsys.readouterr().err


def test_ranks_other_than_0_do_not_write(monkeypatch):
    stream = FullStream()
    monkeypatch.setattr(sys, "stdout", stream)
    MLPerfLogger(enabled=False).event("submission_benchmark", "resnet")
    assert stream.attempts == 0
