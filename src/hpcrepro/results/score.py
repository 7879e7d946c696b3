"""The MLPerf time-to-train score of a result set, as mlperf-logging's summarizer computes it.

Olympic mean of the runs' minutes: sort, drop the fastest and the slowest (a single failed run is
the slowest), average the rest; more than one failed run means no score. The mean is multiplied by
the scaling factor: the directory's `scaling.json` when there is one (what the summarizer reads),
otherwise the factor our RCP check computes. Float operations follow the summarizer's order so the
result is bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcrepro.results import rcp
from hpcrepro.results.runs import RunResult

REQUIRED_RUNS = 5
MAX_DROPPED = 1


@dataclass
class Score:
    minutes: float | None
    olympic_minutes: float | None
    scaling_factor: float
    scaling_source: str  # "scaling.json", "rcp" or "none"
    dropped: int
    rcp: rcp.RcpResult | None
    reason: str  # why there is no score (empty when there is)

    @property
    def valid(self) -> bool:
        return self.minutes is not None


def olympic_average(scores: list[float], dropped: int, max_dropped: int = MAX_DROPPED
                    ) -> float | None:
    """The summarizer's `_compute_olympic_average`, same slicing and summation order."""
    ordered = sorted(scores)
    countable = ordered[max_dropped : len(ordered) - (max_dropped - dropped)]
    if not countable:
        return None
    return sum(countable) * 1.0 / len(countable)


def read_scaling_json(folder: Path) -> float | None:
    """The factor from a published `scaling.json`, or None when the folder has none."""
    path = folder / "scaling.json"
    if not path.is_file():
        return None
    from hpcrepro.errors import UserError
    from hpcrepro.jsonio import read_json

    hint = 'it must be JSON like {"scaling_factor": 1.0042}'
    data = read_json(path, hint)
    try:
        factor = float(data["scaling_factor"])
    except (ValueError, KeyError, TypeError, OverflowError) as error:
        raise UserError(f"cannot read scaling_factor ({error!r})", where=str(path),
                        hint=hint) from error
    if not (math.isfinite(factor) and factor > 0):
        raise UserError(f"scaling_factor is {factor!r}, not a positive number",
                        where=f"{path} key 'scaling_factor'", hint=hint)
    return factor


def score_runs(runs: Sequence[RunResult], ruleset: str, published_scaling: float | None = None,
               *, use_rcp_factor: bool = True) -> Score:
    """Score a result set; `published_scaling` is a scaling.json factor that overrides ours.

    With `use_rcp_factor=False` and no scaling.json the factor is 1.0, as in mlperf-logging's
    summarizer on a published tree (it reads scaling.json before its RCP step rewrites it).
    """
    minutes = [r.time_to_train_minutes for r in runs if r.valid]
    dropped = len(runs) - len(minutes)
    check = None
    if runs and all(r.benchmark in (None, "resnet") for r in runs):
        check = rcp.check([r.global_batch_size for r in runs],
                          [r.epochs_to_target for r in runs], ruleset)
    if published_scaling is not None:
        factor, source = published_scaling, "scaling.json"
    elif use_rcp_factor and check is not None and check.scaling_factor != 1.0:
        factor, source = check.scaling_factor, "rcp"
    else:
        factor, source = 1.0, "none"
    reason = ""
    if dropped > MAX_DROPPED:
        reason = f"{dropped} of {len(runs)} runs failed; at most {MAX_DROPPED} may fail"
    elif len(runs) < REQUIRED_RUNS:
        reason = f"ResNet needs {REQUIRED_RUNS} runs, found {len(runs)}"
    olympic = None if dropped > MAX_DROPPED else olympic_average(
        [m for m in minutes if m is not None], dropped)
    if olympic is None and not reason:
        reason = "not enough runs for an olympic mean"
    score = olympic * factor if olympic is not None and len(runs) >= REQUIRED_RUNS else None
    return Score(score, olympic, factor, source, dropped, check, reason)


def choose_runs(runs: Sequence[RunResult]) -> list[RunResult]:
    """Exactly 5 runs: all of them, or, with more, the window of 5 consecutive runs (log order)
    whose olympic score is the median of all windows (training rules, 'Scoring'); failed runs
    count as infinitely slow."""
    if len(runs) <= REQUIRED_RUNS:
        return list(runs)
    windows = []
    for first in range(len(runs) - REQUIRED_RUNS + 1):
        window = runs[first : first + REQUIRED_RUNS]
        minutes = [r.time_to_train_minutes for r in window if r.valid]
        dropped = REQUIRED_RUNS - len(minutes)
        olympic = olympic_average([m for m in minutes if m is not None], dropped) \
            if dropped <= 1 else None
        windows.append((float("inf") if olympic is None else olympic, first))
    windows.sort()
    first = windows[(len(windows) - 1) // 2][1]
    return list(runs[first : first + REQUIRED_RUNS])
