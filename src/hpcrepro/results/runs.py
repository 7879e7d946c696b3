"""One training run's log → its result: status, time to train, epochs, accuracy, compliance.

`summarize_run` streams the log once and answers everything scoring needs. Time to train and the
epochs used by the RCP check follow mlperf-logging's readers exactly (first run_start/run_stop pair,
last eval_accuracy epoch before a successful run_stop) on the records that reader would see.
`progress` reads only the tail of a growing log, for `status --watch`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcrepro.results.mllog import Problem, iter_records
from hpcrepro.results.rules import StreamingChecker, Verdict
from hpcrepro.results.summaryscan import SummaryScan
from hpcrepro.rounds import TARGET_ACCURACY

EPOCH_KEYS = ("epoch_num", "first_epoch_num")
_STATUS = {"success": "success", "aborted": "aborted"}
_INFO_KEYS = (
    "global_batch_size",
    "submission_benchmark",
    "submission_division",
    "submission_org",
    "submission_platform",
)
# Every key summarize_run reads itself (the compliance rules read theirs through the checker).
SUMMARY_KEYS = frozenset(
    {
        "eval_accuracy",
        "run_start",
        "run_stop",
        "epoch_start",
        "block_start",
        "epoch_stop",
        "block_stop",
        "seed",
        *_INFO_KEYS,
    }
)


@dataclass
class RunResult:
    """What one run log says. `valid` is what the olympic score counts."""

    path: str
    status: str  # success | aborted | failed | incomplete
    time_to_train_minutes: float | None
    epochs_to_target: float | None  # the RCP checker's epochs (None = did not converge)
    best_accuracy: float | None
    last_accuracy: float | None
    last_epoch: float | None
    run_start: bool
    run_stop: bool
    reached_target: bool
    compliance: Verdict
    global_batch_size: int | None = None
    benchmark: str | None = None
    division: str | None = None
    org: str | None = None
    platform: str | None = None
    seeds: list[Any] = field(default_factory=list)
    evals: list[tuple[float, float]] = field(default_factory=list)  # (minutes since run_start, acc)
    problems: list[Problem] = field(default_factory=list)  # the first KEPT_PROBLEMS of them
    problem_count: int = 0  # all of them
    unreadable_count: int = 0  # those mlperf-logging's parser would reject too
    official_compliance: bool | None = None  # from mlperf-logging's checker when it was run
    mllog_records: int = 0  # records mlperf-logging's parser would see
    timing_problem: str = ""  # why run_start/run_stop give no time to train, when they do not

    @property
    def compliant(self) -> bool:
        if self.official_compliance is not None:
            return self.official_compliance
        return self.compliance.valid

    @property
    def valid(self) -> bool:
        return self.compliant and self.time_to_train_minutes is not None

    @property
    def reason(self) -> str:
        """Why the run does not count (empty when it does)."""
        if self.valid:
            return ""
        if not self.run_start or not self.run_stop:
            missing = [
                k
                for k, ok in (("run_start", self.run_start), ("run_stop", self.run_stop))
                if not ok
            ]
            return f"{' and '.join(missing)} missing (truncated log?)"
        if self.timing_problem:
            return self.timing_problem
        if not self.reached_target:
            best = "none" if self.best_accuracy is None else f"{self.best_accuracy:.5f}"
            return f"never reached {TARGET_ACCURACY} (best {best})"
        if self.unreadable_count:
            first = next((p for p in self.problems if p.official_parse_error), None)
            if first is None:  # beyond the problems kept
                return f"{self.unreadable_count} unreadable MLLOG records"
            more = self.unreadable_count - 1
            return (
                f"unreadable MLLOG record at line {first.line}"
                f"{f' (+{more} more)' if more else ''}: {first.message}"
            )
        if self.compliance.official_crash:
            return f"mlperf-logging would crash: {self.compliance.official_crash}"
        messages = self.compliance.messages or ["mlperf-logging's compliance checker rejects it"]
        return "compliance: " + "; ".join(m.splitlines()[0] for m in messages[:3])


def _epoch(metadata: Any) -> float | None:
    if isinstance(metadata, dict):
        for name in EPOCH_KEYS:
            value = metadata.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


# Problems kept per log with file, line and text; the rest are only counted, so that a log of
# garbage (millions of damaged records) cannot fill memory.
KEPT_PROBLEMS = 100


def summarize_run(path: str | Path, ruleset: str) -> RunResult:
    """Stream one log and summarize it (compliance judged by the rules of `ruleset`)."""
    checker = StreamingChecker(ruleset)
    problems: list[Problem] = []
    problem_count = unreadable_count = 0

    def on_problem(problem: Problem) -> None:
        nonlocal problem_count, unreadable_count
        problem_count += 1
        if len(problems) < KEPT_PROBLEMS:
            problems.append(problem)
        if problem.official_parse_error:
            unreadable_count += 1
            checker.parse_error(problem.official_crash, str(problem))

    start: float | None = None
    stop: float | None = None
    pair_found = False  # mlperf-logging uses the first point where both are known
    start_seen = stop_seen = False
    status = "incomplete"
    conv_epoch: float | None = None
    epochs_to_target: float | None = None
    best = last = last_epoch = None
    reached = False
    info: dict[str, Any] = {}
    seeds: list[Any] = []
    evals: list[tuple[float, float]] = []
    feed = checker.feed
    # Records nobody reads, and rank copies that change nothing, are only counted by the scan;
    # copies only the compliance rules need go straight to the checker.
    copies_read_here = {"run_start", "run_stop"}
    scan = SummaryScan(
        path,
        on_problem,
        needed=checker.keys | SUMMARY_KEYS,
        copies_needed=checker.copy_unsafe | copies_read_here,
        copies_fed=checker.copy_unsafe - copies_read_here,
        feed_copy=feed,
    )
    for record in scan:
        key = record.key
        if record.official:
            feed(record.time_ms, key, record.value, record.metadata, scan.official - 1)
        if key == "eval_accuracy":
            value = record.value
            epoch = _epoch(record.metadata)
            if isinstance(value, int | float) and not isinstance(value, bool):
                last = float(value)
                if math.isfinite(last):  # a NaN would poison max() and the plot
                    best = last if best is None else max(best, last)
                    reached = reached or TARGET_ACCURACY <= last < 1.0
                    since = None if start is None else (record.time_ms - start) / 60000
                    if since is not None and math.isfinite(since):
                        evals.append((since, last))
            if epoch is not None:
                last_epoch = epoch if last_epoch is None else max(last_epoch, epoch)
            meta = record.metadata
            if record.official and isinstance(meta, dict) and "epoch_num" in meta:
                raw = meta["epoch_num"]
                conv_epoch = round(raw, 3) if isinstance(raw, int | float) else None
        elif key == "run_start":
            start_seen = True
            if record.official and not pair_found:
                start = record.time_ms
                pair_found = stop is not None
        elif key == "run_stop":
            stop_seen = True
            meta = record.metadata if isinstance(record.metadata, dict) else {}
            status = _STATUS.get(str(meta.get("status")), "failed")
            if record.official:
                if not pair_found:
                    stop = record.time_ms
                    pair_found = start is not None
                epochs_to_target = conv_epoch if meta.get("status") == "success" else None
        elif key in ("epoch_start", "block_start", "epoch_stop", "block_stop"):
            epoch = _epoch(record.metadata)
            if epoch is not None:
                last_epoch = epoch if last_epoch is None else max(last_epoch, epoch)
        elif key == "seed":
            seeds.append(record.value)
        elif key in _INFO_KEYS and record.official:
            info[key] = record.value
    checker.lines = scan.official
    minutes = None
    timing_problem = ""
    if start is not None and stop is not None:
        minutes = (stop - start) / 60 / 1000
        # mlperf-logging would score such a run as it is (a negative, NaN or infinite time)
        if not math.isfinite(minutes):
            timing_problem = (
                f"run_start (time_ms {_ms(start)}) or run_stop (time_ms "
                f"{_ms(stop)}) is not a finite time: no time to train"
            )
        elif minutes <= 0:
            timing_problem = (
                f"run_stop (time_ms {_ms(stop)}) is not after run_start "
                f"(time_ms {_ms(start)}): no time to train"
            )
        if timing_problem:
            minutes = None
    batch = info.get("global_batch_size")
    return RunResult(
        path=str(path),
        status=status,
        time_to_train_minutes=minutes,
        epochs_to_target=epochs_to_target,
        best_accuracy=best,
        last_accuracy=last,
        last_epoch=last_epoch,
        run_start=start_seen,
        run_stop=stop_seen,
        reached_target=reached,
        compliance=checker.verdict(),
        global_batch_size=batch if isinstance(batch, int) and not isinstance(batch, bool) else None,
        benchmark=_text(info.get("submission_benchmark")),
        division=_text(info.get("submission_division")),
        org=_text(info.get("submission_org")),
        platform=_text(info.get("submission_platform")),
        seeds=seeds,
        evals=evals,
        problems=problems,
        problem_count=problem_count,
        unreadable_count=unreadable_count,
        mllog_records=checker.lines,
        timing_problem=timing_problem,
    )


def _ms(time_ms: float) -> str:
    return f"{time_ms:.0f}" if time_ms.is_integer() else repr(time_ms)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


TAIL_BYTES = 256 << 10


def progress(path: str | Path) -> tuple[float | None, float | None, str]:
    """(last epoch, last eval accuracy, status) of a possibly growing log, reading only its tail.

    status is 'not started', 'running', 'success', 'aborted' or 'failed'. The window doubles until
    it holds an epoch (or is the whole file), so cost stays proportional to the tail, not the log.
    """
    size = os.path.getsize(path)
    window = TAIL_BYTES
    while True:
        offset = max(0, size - window)
        epoch = accuracy = None
        status = "not started"
        started = False
        for record in iter_records(path, start=offset):
            if record.key == "run_stop":
                meta = record.metadata if isinstance(record.metadata, dict) else {}
                status = _STATUS.get(str(meta.get("status")), "failed")
            elif record.key in ("run_start", "init_start", "init_stop"):
                started = True
            if record.key == "eval_accuracy" and isinstance(record.value, int | float):
                accuracy = float(record.value)
            found = _epoch(record.metadata)
            if found is not None:
                epoch = found if epoch is None else max(epoch, found)
                started = True
        if status == "not started" and (started or offset > 0):
            status = "running"
        if epoch is not None or offset == 0:
            return epoch, accuracy, status
        window *= 4
