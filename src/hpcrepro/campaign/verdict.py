"""Is a training run valid? Decided from its MLPerf log, not from the job's exit code.

A run is valid exactly when `collect` would score it: its log has `run_stop` with status success,
an `eval_accuracy` at or above the target, and it passes the round's compliance rules (which
need, among others, the `submission_*` events and `cache_clear: true`; a job whose cache drop
failed stops before the run, so such a run never claims it). A job that ended PREEMPTED or
REQUEUED is void whatever its log says (the log may restart); a job that ended TIMEOUT,
NODE_FAIL or OUT_OF_MEMORY voids the runs whose log has no `run_stop` (a run that finished
before the job died is judged by its log).

The log is read by the results area (`hpcrepro.results.runs.summarize_run` for a finished run,
`progress` for a growing one), so a campaign and its report agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcrepro.rounds import TARGET_ACCURACY
from hpcrepro.scheduler import states

VALID = "valid"
INVALID = "invalid"
VOID = "void"
NOT_RUN = "not_run"
VERDICTS = (VALID, INVALID, VOID, NOT_RUN)
_LOG_RESTARTS = frozenset({states.PREEMPTED, states.REQUEUED})


@dataclass
class LogOutcome:
    """What an MLLOG file says so far."""

    started: bool = False
    status: str | None = None  # run_stop status, None while running or when killed
    best_accuracy: float | None = None
    last_accuracy: float | None = None
    epoch: float | None = None
    counts: bool = False  # collect would score it (converged, timed and compliant)
    why_not: str = ""  # collect's reason when it would not

    @property
    def stopped(self) -> bool:
        return self.status is not None


def finished_log(path: Path, ruleset: str) -> LogOutcome:
    """What the log of a run that has ended says, read as `collect` reads it."""
    from hpcrepro.results.runs import summarize_run

    try:
        result = summarize_run(path, ruleset)
    except OSError:  # never written, unreadable, or not a regular file
        return LogOutcome()
    return LogOutcome(
        started=result.run_start,
        status=result.status if result.run_stop else None,
        best_accuracy=result.best_accuracy,
        last_accuracy=result.last_accuracy,
        epoch=result.last_epoch,
        counts=result.valid,
        why_not=result.reason,
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


def judge(
    log: Path, job_state: str, ruleset: str, target: float = TARGET_ACCURACY
) -> tuple[str, str]:
    """(verdict, reason) for one run whose job ended in `job_state`, under `ruleset`'s rules."""
    if job_state in (states.BLOCKED, states.PLANNED):
        return NOT_RUN, "never started: a stage it depends on failed"
    if job_state in _LOG_RESTARTS:
        return VOID, f"job {job_state}: void for time-to-train"
    outcome = finished_log(log, ruleset)
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
    if not outcome.counts:
        return INVALID, outcome.why_not
    return VALID, f"reached {outcome.best_accuracy:.4f}, compliant with the {ruleset} rules"
