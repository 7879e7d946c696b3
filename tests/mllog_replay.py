"""Re-emit a published MLPerf result log's events through a live logger, time-compressed.

The training program of the tests is a replay: the events of a real result log (from the shared
research folder) are logged again, in order, through mlperf-logging's own `mllog` (or NVIDIA's
`mlperf_log_utils` inside the stand-in images), with every `time_ms` moved by one offset so the
run's time to train stays the published one, while the wall clock runs `speedup` times faster.
Lines the job itself logs (the `submission_*` events, `cache_clear`) are left out on request.

Run as a program it replays into mlperf-logging's `mllog`; `tests/nvidia_stand_in/train_imagenet.py`
replays into NVIDIA's logger instead. Both are plain Python 3 with the standard library plus the
logger, so they run inside the test images.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MARKER = ":::MLLOG "
JOB_KEYS = frozenset(
    {
        "submission_benchmark",
        "submission_org",
        "submission_division",
        "submission_status",
        "submission_platform",
        "cache_clear",
    }
)
EPOCH_KEYS = ("epoch_num", "first_epoch_num")

# (event_type, key, value, metadata, time_ms) -> None
Emit = Callable[[str, str, Any, dict[str, Any], int], None]


def read_events(path: str, skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The `:::MLLOG` records of a result log, in order, without the keys in `skip`."""
    skipped = frozenset(skip)
    events = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            start = line.find(MARKER)
            if start < 0:
                continue
            record = json.loads(line[start + len(MARKER) :])
            if record["key"] not in skipped:
                events.append(record)
    return events


def abort(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same run, not converged: every accuracy below the target, run_stop aborted."""
    changed = []
    for record in events:
        record = dict(record, metadata=dict(record.get("metadata") or {}))
        if record["key"] == "eval_accuracy":
            record["value"] = round(min(float(record["value"]), 0.75) * 0.9, 5)
        if record["key"] == "run_stop":
            record["metadata"]["status"] = "aborted"
        changed.append(record)
    return changed


def replay(
    events: list[dict[str, Any]],
    emit: Emit,
    *,
    speedup: float = 1000.0,
    max_pause_s: float = 0.5,
    after_first_epoch: Callable[[], None] | None = None,
) -> None:
    """Emit `events` with their original spacing divided by `speedup` (each pause capped)."""
    if not events:
        return
    offset = int(time.time() * 1000) - int(events[0]["time_ms"])
    previous = int(events[0]["time_ms"])
    first_epoch_done = False
    for record in events:
        moment = int(record["time_ms"])
        pause = (moment - previous) / 1000.0 / speedup
        if pause > 0:
            time.sleep(min(pause, max_pause_s))
        previous = moment
        metadata = {
            key: value
            for key, value in (record.get("metadata") or {}).items()
            if key not in ("file", "lineno")
        }
        emit(record["event_type"], record["key"], record.get("value"), metadata, moment + offset)
        if record["key"] in ("epoch_stop", "block_stop") and not first_epoch_done:
            first_epoch_done = True
            sys.stdout.flush()
            if after_first_epoch is not None:
                after_first_epoch()


def mllog_emitter() -> Emit:
    """An emitter writing through mlperf-logging's `mllog` to standard output."""
    from mlperf_logging import mllog

    mllog.config(filename=os.devnull)
    logger = mllog.get_mllogger()
    calls = {"INTERVAL_START": logger.start, "INTERVAL_END": logger.end}

    def emit(kind: str, key: str, value: Any, metadata: dict[str, Any], time_ms: int) -> None:
        log = calls.get(kind, logger.event)
        log(key=key, value=value, metadata=metadata or None, time_ms=time_ms)

    return emit


def epochs_of(events: Iterable[dict[str, Any]]) -> Iterator[float]:
    for record in events:
        for name in EPOCH_KEYS:
            value = (record.get("metadata") or {}).get(name)
            if isinstance(value, int | float):
                yield float(value)


if __name__ == "__main__":
    # python3 mllog_replay.py LOG [--skip-job-keys] [--abort]
    arguments = sys.argv[1:]
    found = read_events(arguments[0], JOB_KEYS if "--skip-job-keys" in arguments else ())
    replay(abort(found) if "--abort" in arguments else found, mllog_emitter())
