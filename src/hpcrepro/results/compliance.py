"""mlperf-logging's own compliance checker, run as a subprocess per log with an explicit ruleset.

A subprocess because the checker keeps a module-global config queue, prints tracebacks on logs it
cannot handle, and writes a log file into its working directory; the ruleset is always passed
because its default (a post-ResNet ruleset) crashes on ResNet logs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHECK_TIMEOUT_S = 600
# 4.1.49-4.1.51 report the RCP factor instead of the score; earlier ones lack the fixes we match.
MIN_VERSION = (4, 1, 52)


def require_mlperf_logging() -> str:
    """The installed mlperf-logging version; refuse one known to score wrongly."""
    from importlib.metadata import PackageNotFoundError, version

    from hpcrepro.errors import UserError

    try:
        found = version("mlperf-logging")
    except PackageNotFoundError as error:
        raise UserError("mlperf-logging is not installed",
                        hint="pip install 'mlperf-logging>=4.1.52'") from error
    parts = tuple(int(p) for p in found.split(".")[:3] if p.isdigit())
    if parts < MIN_VERSION:
        raise UserError(f"mlperf-logging {found} is too old (scores are wrong before 4.1.52)",
                        hint="pip install -U 'mlperf-logging>=4.1.52'")
    return found


@dataclass(frozen=True)
class OfficialVerdict:
    valid: bool
    crashed: bool
    detail: str  # the checker's WARNING/ERROR lines, the end of its traceback, or why none
    checked: bool = True  # False: the checker gave no verdict (not run, or did not finish)


def _run_official(module: str, *args: str, timeout: float = CHECK_TIMEOUT_S) -> OfficialVerdict:
    """Run one of mlperf-logging's checkers in a scratch folder and read its log file."""
    with tempfile.TemporaryDirectory(prefix="hpcrepro-cc-") as scratch:
        out = Path(scratch) / "checker.log"
        try:
            done = subprocess.run(
                [sys.executable, "-m", module, *args, "--log_output", str(out)],
                cwd=scratch, capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:  # run() has killed it
            return OfficialVerdict(False, False, f"mlperf-logging's {module.rsplit('.', 1)[-1]} "
                                   f"did not finish within {timeout:.0f} s", checked=False)
        text = out.read_text(errors="replace") if out.is_file() else ""
    crashed = "Traceback (most recent call last)" in done.stderr
    if crashed:
        detail = done.stderr.strip().splitlines()[-1]
    else:
        detail = "\n".join(line for line in text.splitlines()
                           if line.startswith(("WARNING", "ERROR")) and "FAILED" not in line)
    valid = done.returncode == 0 and "SUCCESS" in text and not crashed
    return OfficialVerdict(valid, crashed, detail)


def run_checker(log: str | Path, ruleset: str,
                timeout: float = CHECK_TIMEOUT_S) -> OfficialVerdict:
    """`python -m mlperf_logging.compliance_checker --usage training --ruleset R --quiet LOG`,
    unless the log holds a record the checker would take hours over (see `screen`)."""
    from hpcrepro.results.screen import long_record

    try:
        found = long_record(log)
    except OSError as error:
        return OfficialVerdict(False, False, f"cannot read it: {error.strerror or error}",
                               checked=False)
    if found is not None:
        return OfficialVerdict(False, False, f"not run: {found.describe()}; its parser's time "
                               "grows with the square of that length (hours for a MiB)",
                               checked=False)
    return _run_official("mlperf_logging.compliance_checker", "--usage", "training",
                         "--ruleset", ruleset, "--quiet", str(Path(log).resolve()),
                         timeout=timeout)


def run_package_checker(folder: str | Path, ruleset: str) -> OfficialVerdict:
    """`python -m mlperf_logging.package_checker FOLDER training R` on a submission tree."""
    return _run_official("mlperf_logging.package_checker", str(Path(folder).resolve()),
                         "training", ruleset)


def check_logs(logs: Sequence[str | Path], ruleset: str, jobs: int = 2) -> list[OfficialVerdict]:
    """Check several logs, `jobs` at a time, in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda log: run_checker(log, ruleset), logs))
