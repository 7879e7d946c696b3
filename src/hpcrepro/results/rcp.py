"""Reference Convergence Point check and score scaling, computed from the RCP data.

Follows mlperf-logging's RCP checker (pruned RCPs, olympic means, one-sided pooled t-test for the
minimum acceptable mean, linear interpolation between neighbouring batch sizes) but in our own code;
the `scaling.json` files NVIDIA and others published are the test vectors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

NOT_CONVERGED = 1e9
SUBMISSION_RUNS = 5
ALPHA = 0.05
TOLERANCE = 0.0001


@dataclass(frozen=True)
class Reference:
    batch_size: int
    mean: float
    stdev: float
    min_epochs: float

    @property
    def max_speedup(self) -> float:
        return self.mean / self.min_epochs


@dataclass(frozen=True)
class RcpResult:
    passed: bool
    message: str
    scaling_factor: float  # what the score is multiplied by (1.0 unless the RCP asks for more)
    reference_mean: float | None = None
    min_mean_epochs: float | None = None
    mean_epochs: float | None = None


def rcp_file(ruleset: str) -> Path:
    import mlperf_logging.rcp_checker as package

    return Path(package.__file__).resolve().parent / f"training_{ruleset}" / "rcps_resnet.json"


def _olympic_mean(values: list[float]) -> float:
    import numpy as np

    ordered = sorted(values)
    return float(np.mean(ordered[1 : len(ordered) - 1]))


def _min_acceptable_mean(mean: float, stdev: float, reference_runs: int) -> float:
    """Binary search for the smallest mean that a one-sided t-test (alpha 0.05) still accepts."""
    from scipy.special import stdtr

    if stdev == 0:
        return mean
    submission_runs = SUBMISSION_RUNS - 2
    freedom = reference_runs + submission_runs - 2
    spread = stdev * math.sqrt(1 / reference_runs + 1 / submission_runs)
    low, high = 0.0, mean
    mid = (low + high) / 2
    while high - low > TOLERANCE:
        p_value = float(stdtr(freedom, (mid - mean) / spread))
        if p_value > ALPHA:
            high = mid
        else:
            low = mid
        mid = (low + high) / 2
    return mid


def _interpolate(batch_size: int, low: Reference, high: Reference) -> Reference:
    import numpy as np

    xs = [low.batch_size, high.batch_size]
    mean = float(np.interp(batch_size, xs, [low.mean, high.mean]))
    stdev = float(np.interp(batch_size, xs, [low.stdev, high.stdev]))
    minimum = _min_acceptable_mean(mean, stdev, 2 * SUBMISSION_RUNS)
    return Reference(batch_size, mean, stdev, minimum)


@cache
def references(ruleset: str) -> tuple[Reference, ...]:
    """All ResNet RCPs of a ruleset, sorted by batch size, with their statistics."""
    import numpy as np

    raw = json.loads(rcp_file(ruleset).read_text())
    found = []
    for record in raw.values():
        epochs = sorted(record["Epochs to converge"])
        mean = float(np.mean(epochs[1 : len(epochs) - 1]))
        stdev = float(np.std(epochs))
        found.append(Reference(record["BS"], mean, stdev,
                               _min_acceptable_mean(mean, stdev, len(epochs) - 2)))
    return tuple(sorted(found, key=lambda r: r.batch_size))


@cache
def pruned_references(ruleset: str) -> tuple[Reference, ...]:
    """Drop RCPs below the fastest-converging batch size and those slower than their neighbours."""
    points = list(references(ruleset))
    fastest = min(points, key=lambda r: r.mean)
    points = [r for r in points if r.batch_size >= fastest.batch_size]
    i = 1
    while i < len(points) - 1:
        if points[i].mean > _interpolate(points[i].batch_size, points[i - 1], points[i + 1]).mean:
            del points[i]
            i -= 1
        i += 1
    return tuple(points)


def _evaluate(reference: Reference, epochs: list[float]) -> tuple[bool, float, float]:
    mean = _olympic_mean(epochs)
    norm = reference.mean / mean
    factor = norm if norm >= 1 else 1.0
    passed = mean >= reference.mean / reference.max_speedup
    return passed, (factor if passed and mean < reference.mean else 1.0), mean


def check(batch_sizes: list[int | None], epochs: list[float | None], ruleset: str) -> RcpResult:
    """RCP verdict and scaling factor for one result set (epochs None = did not converge)."""
    sizes = {b for b in batch_sizes}
    if len(sizes) != 1:
        return RcpResult(False, "batch sizes of the runs differ: "
                         + ", ".join(sorted(str(b) for b in sizes)), 1.0)
    batch_size = next(iter(sizes))
    if batch_size is None or batch_size == -1:
        return RcpResult(False, "could not detect global_batch_size", 1.0)
    values = [NOT_CONVERGED if e is None else e for e in epochs]
    if sum(1 for v in values if v == NOT_CONVERGED) > 1:
        return RcpResult(False, "insufficient convergence: more than one run did not converge", 1.0)
    if len(values) < 3:  # an olympic mean of fewer would be NaN, and its verdict a wrong one
        return RcpResult(False, f"the RCP check needs at least 3 runs (the olympic mean drops "
                         f"the fastest and the slowest), found {len(values)}", 1.0)
    points = pruned_references(ruleset)
    exact = [r for r in points if r.batch_size == batch_size]
    below = [r for r in points if r.batch_size < batch_size]
    above = [r for r in points if r.batch_size > batch_size]
    if exact:
        reference, how = exact[0], f"RCP found (BS {batch_size})"
    elif below and above:
        reference = _interpolate(batch_size, below[-1], above[0])
        how = f"RCP interpolated between BS {below[-1].batch_size} and {above[0].batch_size}"
    elif above:
        reference = points[0]
        how = (f"no RCP for BS {batch_size}; compared with the smallest RCP "
               f"(BS {reference.batch_size})")
    elif below:
        return RcpResult(False, f"missing RCP: no reference for batch size {batch_size}", 1.0)
    else:
        return RcpResult(False, "no RCPs found", 1.0)
    passed, factor, mean = _evaluate(reference, values)
    minimum = reference.mean / reference.max_speedup
    verdict = "pass" if passed else "FAIL: converges faster than the RCP allows"
    return RcpResult(passed, f"{how}: {verdict}", factor, reference.mean, minimum, mean)
