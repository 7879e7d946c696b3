"""Is a training run valid? Decided from its MLPerf log, not from the job's exit code.

A run is valid when its log has `run_stop` with status success and an `eval_accuracy` at or above
the target. A job that ended PREEMPTED or REQUEUED is void whatever its log says (the log may
restart); a job that ended TIMEOUT, NODE_FAIL or OUT_OF_MEMORY voids the runs whose log has no
`run_stop` (a run that finished before the job died is judged by its log).

The log is read by the results area (`hpcrepro.results.runs.summarize_run` for a finished run,
`progress` for a growing one), so a campaign and its report agree. Compliance is not part of the
verdict: it decides whether a valid run may be scored, which is the results area's question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcrepro.scheduler import states

RESNET_TARGET = 0.759
VALID = "valid"
INVALID = "invalid"
VOID = "void"
NOT_RUN = "not_run"
_LOG_RESTARTS = frozenset({states.PREEMPTED, states.REQUEUED})


@dataclass
class LogOutcome:
    """What an MLLOG file says so far."""

    started: bool = False
    status: str | None = None  # run_stop status, None while running or when killed
    best_accuracy: float | None = None
    last_accuracy: float | None = None
    epoch: float | None = None

    @property
    def stopped(self) -> bool:
        return self.status is not None


def finished_log(path: Path) -> LogOutcome:
    """What the log of a run that has ended says (the same reader `collect` uses)."""
    from hpcrepro.results.runs import summarize_run

    try:
        result = summarize_run(path)
    except OSError:  # never written, unreadable, or not a regular file
        return LogOutcome()
    return LogOutcome(
        started=result.run_start,
        status=result.status if result.run_stop else None,
        best_accuracy=result.best_accuracy,
        last_accuracy=result.last_accuracy,
        epoch=result.last_epoch,
    )


def live_progress(path: Path) -> LogOutcome:
    """Epoch and last accuracy of a growing log, from its tail."""
    from hpcrepro.results.runs import progress

    try:
        epoch, accuracy, status = progress(path)
    except OSError:
        return LogOutcome()
    return LogOutcome(
        started=status != "not started",
        status=status if status in ("success", "aborted", "failed") else None,
        last_accuracy=accuracy,
        epoch=epoch,
    )


def judge(log: Path, job_state: str, target: float = RESNET_TARGET) -> tuple[str, str]:
    """(verdict, reason) for one run whose job ended in `job_state`."""
    if job_state in (states.BLOCKED, states.PLANNED):
        return NOT_RUN, "never started: a stage it depends on failed"
    if job_state in _LOG_RESTARTS:
        return VOID, f"job {job_state}: void for time-to-train"
    outcome = finished_log(log)
    if not log.exists() or not outcome.started:
        if job_state == states.CANCELLED:
            return NOT_RUN, "cancelled before the run started"
        return (
            VOID if states.is_void(job_state) else NOT_RUN,
            f"job {job_state}; no run_start in {log.name}",
        )
    if not outcome.stopped:
        return VOID, f"job {job_state} before run_stop: the run was cut short"
    if outcome.status != "success":
        return INVALID, f"run_stop status {outcome.status}"
    if outcome.best_accuracy is None or outcome.best_accuracy < target:
        return INVALID, f"target {target} not reached (best {outcome.best_accuracy})"
    return VALID, f"reached {outcome.best_accuracy:.4f}"
