"""Status as text (a table per campaign) or JSON, with live progress of running training jobs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcrepro.campaign import engine
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.state import TRAIN, Job, Manifest, Stage, Verdict
from hpcrepro.campaign.verdict import live_progress
from hpcrepro.scheduler import registry, states


def _elapsed(job: Job) -> str:
    if job.state in (states.PENDING, states.PLANNED, states.SUBMITTING, states.BLOCKED):
        return ""
    if job.elapsed:
        return job.elapsed
    start = job.start
    if not start:
        return ""
    try:
        begin = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        end = (
            datetime.strptime(job.end, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            if job.end
            else datetime.now(timezone.utc)
        )
    except ValueError:
        return ""
    seconds = int((end - begin).total_seconds())
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress(paths: CampaignPaths, manifest: Manifest, stage: Stage) -> str:
    """'epoch 12/35 acc 0.6123' for a running training job, read from its growing MLLOG."""
    parts = []
    job_id = stage.current.job_id if stage.current else None
    for index in stage.runs:
        outcome = live_progress(paths.run_log(index, job_id))
        if not outcome.started:
            continue
        text = (
            f"run {index:02d} epoch {outcome.epoch:g}"
            if outcome.epoch is not None
            else (f"run {index:02d} started")
        )
        if manifest.target_epoch and outcome.epoch is not None:
            text += f"/{manifest.target_epoch:g}"
        if outcome.last_accuracy is not None:
            text += f" acc {outcome.last_accuracy:.4f}"
        parts.append(text)
    return "; ".join(parts)


def _verdict_text(index: int, judged: Verdict) -> str:
    """'run 02 valid', or with the reason when the run does not count."""
    text = f"run {index:02d} {judged.verdict}"
    return text if judged.verdict == "valid" else f"{text}: {judged.reason}"


def stage_rows(paths: CampaignPaths, manifest: Manifest, live: bool) -> list[dict[str, Any]]:
    rows = []
    for stage in manifest.stages:
        job = stage.current
        state = stage.state
        note = ""
        reason = job.reason if job else None
        if (
            state == states.PENDING
            or state in (states.BLOCKED,)
            or (states.is_finished(state) and reason and state != states.COMPLETED)
        ):
            note = reason or ""
        if stage.kind == TRAIN:
            judged = [stage.verdicts.get(i) for i in stage.runs]
            if all(judged) and states.is_finished(state):
                note = ", ".join(
                    _verdict_text(i, v) for i, v in zip(stage.runs, judged, strict=True) if v
                )
            elif live and state == states.RUNNING:
                note = progress(paths, manifest, stage)
        if stage.replaces:
            note = (note + f" (replaces {', '.join(stage.replaces)})").strip()
        rows.append(
            {
                "stage": stage.name,
                "job_id": (job.job_id if job else None) or "",
                "state": state,
                # the scheduler's own word for the state (the key's name predates other backends)
                "slurm_state": (job.scheduler_state if job else None) or "",
                "elapsed": _elapsed(job) if job else "",
                "nodes": (job.nodelist or (str(job.nodes) if job.nodes else "")) if job else "",
                "note": note,
                "attempts": len(stage.jobs),
                "runs": stage.runs,
                "verdicts": {str(run): judged.to_json() for run, judged in stage.verdicts.items()},
            }
        )
    return rows


def as_json(
    campaigns: list[tuple[CampaignPaths, Manifest]],
    unknown: dict[Path, list[str]] | None = None,
    *,
    one_line: bool = False,
) -> str:
    """The status as a JSON array; `one_line` gives it on one compact line (for JSON lines).
    `unknown` names, per campaign folder, the jobs whose state the scheduler did not give."""
    out = []
    unknown = unknown or {}
    for paths, manifest in campaigns:
        out.append(
            {
                "campaign": manifest.name,
                "folder": str(paths.root),
                "backend": manifest.backend,
                "system": manifest.system,
                "version": manifest.version,
                "cancelled": manifest.cancelled,
                "states_known": paths.root not in unknown,
                "states_unknown": unknown.get(paths.root, []),
                "states_checked": manifest.states_checked,
                "runs": engine.run_counts(manifest) | {"required": manifest.runs_required},
                "stages": stage_rows(paths, manifest, live=True),
            }
        )
    return json.dumps(out, separators=(",", ":")) if one_line else json.dumps(out, indent=1)


_COLUMNS = (
    ("stage", "STAGE"),
    ("job_id", "JOB"),
    ("state", "STATE"),
    ("elapsed", "ELAPSED"),
    ("nodes", "NODES"),
    ("note", "REASON / PROGRESS"),
)


def as_text(
    campaigns: list[tuple[CampaignPaths, Manifest]],
    live: bool = False,
    unknown: dict[Path, list[str]] | None = None,
) -> str:
    unknown = unknown or {}
    if not campaigns:
        return "no campaigns yet: start one with `hpcrepro submit --system ... --version ...`"
    blocks = []
    for paths, manifest in campaigns:
        counts = engine.run_counts(manifest)
        title = (
            f"{manifest.name}  ({manifest.backend}, {manifest.system} "
            f"{manifest.version})  runs: {counts['valid']}/{manifest.runs_required}"
            f" valid, {counts['coming']} to come, {counts['lost']} lost"
            + ("  [cancelled]" if manifest.cancelled else "")
        )
        rows = stage_rows(paths, manifest, live)
        if paths.root in unknown:
            known = manifest.states_checked or "their submission"
            title += (
                f"\n  {registry.title(manifest.backend)} did not answer: "
                f"{len(unknown[paths.root])} job(s) show their "
                f"state as last known, at {known}"
            )
        table = [[head for _, head in _COLUMNS]]
        table += [[str(row[key]) for key, _ in _COLUMNS] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
        lines = [title]
        for line in table:
            lines.append(
                "  "
                + "  ".join(
                    cell.ljust(width) for cell, width in zip(line, widths, strict=False)
                ).rstrip()
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------- per-run live view (--watch)

_TAIL_BYTES = 1 << 16


def _run_clock(log: Path) -> tuple[float | None, float | None, bool]:
    """(run_start, the latest record, whether run_stop is logged): times in ms from the log's
    own clock, so elapsed and ETA agree with the epochs they are computed from."""
    from hpcrepro.results.mllog import iter_records

    start = latest = None
    stopped = False
    try:
        size = log.stat().st_size
        for record in iter_records(log):  # run_start comes before any epoch: a short read
            if record.key == "run_start":
                start = record.time_ms
            if record.key in ("run_start", "epoch_start", "block_start", "eval_accuracy"):
                break
        for record in iter_records(log, start=max(0, size - _TAIL_BYTES)):
            latest = record.time_ms if latest is None else max(latest, record.time_ms)
            stopped = stopped or record.key == "run_stop"
    except OSError:
        return None, None, False
    return start, latest, stopped


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(seconds)
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def run_rows(campaigns: list[tuple[CampaignPaths, Manifest]]) -> list[dict[str, Any]]:
    """One row per training run: its state, epoch of the run's epoch budget (the last
    evaluation epoch of its hyperparameters), last accuracy against the target, elapsed and ETA
    (the time per epoch so far times the epochs left), read from the run logs."""
    rows = []
    for paths, manifest in campaigns:
        for stage in manifest.stages:
            if stage.kind != TRAIN:
                continue
            job = stage.current
            job_id = job.job_id if job else None
            for index in stage.runs:
                judged = stage.verdicts.get(index)
                row: dict[str, Any] = {
                    "campaign": manifest.name,
                    "run": index,
                    "stage": stage.name,
                    "state": judged.verdict if judged else stage.state,
                    "epoch": None,
                    "epochs": manifest.target_epoch,
                    "accuracy": None,
                    "target": manifest.target_accuracy,
                    "elapsed_s": None,
                    "eta_s": None,
                }
                log = paths.run_log(index, job_id)
                if stage.state != states.PLANNED and log.is_file():
                    outcome = live_progress(log)
                    row["epoch"], row["accuracy"] = outcome.epoch, outcome.last_accuracy
                    if outcome.started and not judged:
                        row["state"] = outcome.status or "running"
                    start, latest, stopped = _run_clock(log)
                    if start is not None and latest is not None:
                        row["elapsed_s"] = round(max(0.0, latest - start) / 1000, 1)
                    if (
                        not stopped
                        and row["elapsed_s"]
                        and outcome.epoch
                        and manifest.target_epoch
                        and states.is_active(stage.state)
                    ):
                        left = max(0.0, manifest.target_epoch - outcome.epoch)
                        row["eta_s"] = round(row["elapsed_s"] / outcome.epoch * left, 1)
                rows.append(row)
    return rows


def run_line(row: dict[str, Any]) -> str:
    """'demo run 02 running epoch 3/16 acc 0.4100/0.759 elapsed 0:00:12 ETA 0:00:52'."""
    parts = [f"{row['campaign']} run {row['run']:02d} {row['state']}"]
    if row["epoch"] is not None:
        parts.append(
            f"epoch {row['epoch']:g}" + (f"/{row['epochs']:g}" if row["epochs"] else "")
        )
    if row["accuracy"] is not None:
        parts.append(f"acc {row['accuracy']:.4f}/{row['target']:g}")
    if row["elapsed_s"] is not None:
        parts.append(f"elapsed {_clock(row['elapsed_s'])}")
    if row["eta_s"] is not None:
        parts.append(f"ETA {_clock(row['eta_s'])}")
    return " ".join(parts)


def change_lines(
    campaigns: list[tuple[CampaignPaths, Manifest]],
    seen: dict[tuple[str, str], tuple[Any, ...]],
) -> list[str]:
    """What changed since the last call (`seen` keeps what was said): a stage's job or state,
    a run's state, epoch or accuracy. The piped `status --watch` prints only these lines."""
    lines = []
    for paths, manifest in campaigns:
        counts = engine.run_counts(manifest)
        title = (
            f"{manifest.name}  runs: {counts['valid']}/{manifest.runs_required} valid, "
            f"{counts['coming']} to come, {counts['lost']} lost"
            + ("  [cancelled]" if manifest.cancelled else "")
        )
        if seen.get((manifest.name, "")) != (title,):
            seen[(manifest.name, "")] = (title,)
            lines.append(title)
        for row in stage_rows(paths, manifest, live=False):
            key = (manifest.name, "stage " + row["stage"])
            said = (row["job_id"], row["state"], row["note"])
            if seen.get(key) != said:
                seen[key] = said
                text = f"{manifest.name} {row['stage']} {row['state']}"
                if row["job_id"]:
                    text += f" (job {row['job_id']})"
                lines.append(text + (f": {row['note']}" if row["note"] else ""))
        for run in run_rows([(paths, manifest)]):
            key = (manifest.name, f"run {run['run']}")
            said = (run["state"], run["epoch"], run["accuracy"])
            if seen.get(key) != said:
                seen[key] = said
                lines.append(run_line(run))
    return lines


def live_table(campaigns: list[tuple[CampaignPaths, Manifest]]) -> Any:
    """The terminal's `status --watch`: the stage table of each campaign, then one row per run
    with a bar of its epoch budget (a rich renderable; rich is imported here only)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text(as_text(campaigns, live=False))]
    rows = run_rows(campaigns)
    if rows:
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("run", "state", "epoch", "", "accuracy", "elapsed", "ETA"):
            table.add_column(column, no_wrap=True)
        for row in rows:
            epoch = "" if row["epoch"] is None else f"{row['epoch']:g}"
            if row["epochs"] and epoch:
                epoch += f"/{row['epochs']:g}"
            bar = (
                ProgressBar(total=row["epochs"], completed=row["epoch"] or 0, width=20)
                if row["epochs"]
                else Text("")
            )
            accuracy = (
                "" if row["accuracy"] is None else f"{row['accuracy']:.4f}/{row['target']:g}"
            )
            table.add_row(
                Text(f"{row['campaign']} {row['run']:02d}"),
                Text(str(row["state"])),
                Text(epoch),
                bar,
                Text(accuracy),
                Text(_clock(row["elapsed_s"])),
                Text(_clock(row["eta_s"])),
            )
        parts += [Text(""), table]
    return Group(*parts)


def outcome_json(action: str, outcome: Any, dry_run: bool = False) -> str:
    """What `submit`, `resume` or `cancel --json` print: one JSON document with the campaign,
    its folder, the stages submitted, every stage's job and state, and the lines a person reads."""
    manifest = outcome.manifest
    stages = (
        [
            {
                "stage": stage.name,
                "job_id": (stage.current.job_id if stage.current else None) or None,
                "state": stage.state,
            }
            for stage in manifest.stages
        ]
        if manifest is not None
        else []
    )
    return json.dumps(
        {
            "action": action,
            "campaign": manifest.name if manifest is not None else None,
            "folder": str(outcome.paths.root),
            "backend": manifest.backend if manifest is not None else None,
            "dry_run": dry_run,
            "cancelled": bool(manifest and manifest.cancelled),
            "submitted": list(outcome.submitted),
            "stages": stages,
            "exit_code": outcome.exit_code,
            "messages": list(outcome.lines),
        },
        indent=1,
    )
