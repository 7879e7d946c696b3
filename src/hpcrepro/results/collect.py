"""`collect`'s pipeline: summarize every run log, check compliance, score, RCP."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpcrepro.results.inputs import Inputs
from hpcrepro.results.runs import RunResult, summarize_run
from hpcrepro.results.score import Score, choose_runs, read_scaling_json, score_runs


@dataclass
class Collection:
    inputs: Inputs
    runs: list[RunResult]
    score: Score
    official_checked: bool
    scored_runs: list[RunResult]  # the 5 runs the score uses (the median window if more ran)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)  # hpcrepro.provenance.FIELDS

    @property
    def ratio_to_published(self) -> float | None:
        """Our score / NVIDIA's published score (above 1 means slower)."""
        published = self.inputs.published_minutes
        if self.score.minutes is None or not published:
            return None
        return self.score.minutes / published


_UTF16_TOKENS = (":::MLLOG".encode("utf-16-le"), ":::MLLOG".encode("utf-16-be"))


def _why_no_records(log: Path) -> str:
    """The skip reason for a log without records; names UTF-16 (PowerShell's `>` writes it)."""
    try:
        with open(log, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        head = b""
    if any(token in head for token in _UTF16_TOKENS):
        return ("UTF-16 text, not the UTF-8/ASCII of MLPerf logs; convert it "
                "(iconv -f UTF-16 -t UTF-8) and collect again")
    return "no :::MLLOG records (not a training run log)"


def collect(inputs: Inputs, *, official: bool = True, scaling: str = "auto") -> Collection:
    """Summarize and score the logs of `inputs`.

    scaling: 'auto' (scaling.json if the folder has one, else our RCP factor), 'folder'
    (scaling.json or 1.0, like mlperf-logging's summarizer) or 'rcp' (always our RCP factor).
    """
    from hpcrepro.results.compliance import require_mlperf_logging

    require_mlperf_logging()
    runs: list[RunResult] = []
    skipped: list[tuple[Path, str]] = list(inputs.excluded)
    for log in inputs.logs:
        try:
            run = summarize_run(log, inputs.ruleset)
        except OSError as error:  # unreadable, a dangling link, gone since it was listed
            skipped.append((log, f"cannot read: {error.strerror or error}"))
            continue
        if run.mllog_records == 0 and not run.problems:
            skipped.append((log, _why_no_records(log)))
            continue
        runs.append(run)
    notes: list[str] = []
    if official and runs:
        from hpcrepro.results.compliance import check_logs

        for run, verdict in zip(runs, check_logs([r.path for r in runs], inputs.ruleset),
                                strict=True):
            if not verdict.checked:
                notes.append(f"{run.path}: mlperf-logging's compliance checker gave no "
                             f"verdict ({verdict.detail}); hpcrepro's rule engine judges this "
                             f"log: {'compliant' if run.compliance.valid else 'NOT compliant'}")
                continue
            run.official_compliance = verdict.valid
            if verdict.valid != run.compliance.valid:
                notes.append(f"{run.path}: mlperf-logging says "
                             f"{'compliant' if verdict.valid else 'NOT compliant'}, hpcrepro's "
                             f"rule engine disagrees; the official verdict is used. "
                             f"{verdict.detail}".strip())
    log_dir = inputs.logs[0].parent if inputs.logs else inputs.folder
    published_scaling = read_scaling_json(log_dir) if scaling in ("auto", "folder") else None
    scored = choose_runs(runs)
    if len(scored) < len(runs):
        names = ", ".join(Path(r.path).name for r in scored)
        notes.append(f"{len(runs)} runs: scored the window of 5 consecutive runs with the median "
                     f"olympic score ({names})")
    result = score_runs(scored, inputs.ruleset, published_scaling,
                        use_rcp_factor=scaling in ("auto", "rcp"))
    check = result.rcp
    if (published_scaling is not None and check is not None
            and abs(check.scaling_factor - published_scaling) > 1e-12):
        notes.append(f"scaling.json says {published_scaling!r}; the RCP data give "
                     f"{check.scaling_factor!r}")
    if scaling == "folder" and published_scaling is None and check and check.scaling_factor != 1.0:
        notes.append(f"no scaling.json; the RCP rules would scale by {check.scaling_factor!r}")
    from hpcrepro.provenance import gather

    found = gather(inputs.folder, inputs.logs, inputs.campaign, inputs.version)
    return Collection(inputs, runs, result, official, scored, skipped, notes, found)
