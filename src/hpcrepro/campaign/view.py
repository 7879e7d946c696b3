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
