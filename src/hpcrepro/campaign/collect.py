"""The collection stage: settle every job's state, judge every run, write the results.

Runs as the campaign's last job (`python -m hpcrepro.campaign.collect CAMPAIGN_DIR`), after all
runs in any state. `results/summary.json` lists every run with its verdict; when the results area
is installed, `results/report.md`, `report.json` and `report.html` hold its score, compliance and
RCP verdicts and the provenance (the same as `hpcrepro collect CAMPAIGN_DIR`); the manifest's
provenance gains what the jobs saw (driver, CUDA, NCCL, nodes).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from hpcrepro.campaign import engine, layout
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import state as st
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.state import Manifest
from hpcrepro.campaign.verdict import NOT_RUN, VOID
from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json


def summary(paths: CampaignPaths, manifest: Manifest) -> dict[str, Any]:
    runs = []
    for stage in manifest.train_stages():
        job = stage.current
        job_id = job.job_id if job else None
        for index in stage.runs:
            judged = stage.verdicts.get(index)
            runs.append(
                {
                    "run": index,
                    "stage": stage.name,
                    "log": str(paths.run_log(index, job_id)),
                    "job_id": job_id,
                    "job_state": job.state if job else None,
                    "verdict": judged.verdict if judged else "pending",
                    "reason": judged.reason if judged else None,
                    "replaces": stage.replaces,
                }
            )
    counts = engine.run_counts(manifest)
    return {
        "campaign": manifest.name,
        "system": manifest.system,
        "version": manifest.version,
        "runs_required": manifest.runs_required,
        "valid_runs": counts["valid"],
        "complete": counts["valid"] >= manifest.runs_required,
        "runs": runs,
    }


def collect(campaign_dir: Path) -> dict[str, Any]:
    from hpcrepro.campaign.actions import scheduler_for

    paths = CampaignPaths(campaign_dir)
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        engine.refresh(paths, manifest, scheduler_for(paths, manifest))
        engine.judge_runs(paths, manifest)
        record_seen(paths, manifest)
        manifest_io.save(paths.manifest, manifest)
    result = summary(paths, manifest)
    _write(paths, "summary.json", json.dumps(result, indent=1) + "\n")
    return result


def record_seen(paths: CampaignPaths, manifest: Manifest) -> None:
    """Add to the manifest's provenance what the jobs saw: driver, CUDA and NCCL versions from
    their logs, the training jobs' nodes (the scheduler's records), the built image's digest."""
    from hpcrepro import provenance

    record = manifest.provenance or st.Provenance()
    seen = provenance.seen_in_logs(provenance.job_files(paths.root))
    nodes = [job.nodelist for stage in manifest.train_stages() for job in stage.jobs
             if job.nodelist]
    if nodes:
        seen["nodes"] = ", ".join(dict.fromkeys(nodes))
    for key in ("driver", "cuda", "nccl", "nodes"):
        if seen.get(key):
            setattr(record, key, seen[key])
    record.image = record.image or seen.get("image")
    record.image_digest = (record.image_digest or provenance.image_digest(record.image)
                           or provenance.built_image_digest(record.image))
    manifest.provenance = record


# Verdicts whose logs are left out of the score.
_NOT_COUNTED = (VOID, NOT_RUN)


def campaign_folder(folder: Path) -> Path:
    """`folder`, or the folder of the registered campaign of that name when no such path
    exists (`hpcrepro collect NAME`)."""
    if not folder.exists() and not folder.is_symlink():
        return layout.folder_of(str(folder)) or folder
    return folder


def not_counted(folder: Path, logs: list[Path]) -> list[tuple[Path, str]]:
    """Run logs of `folder` that its campaign judged void or never run, with the reason.

    A resumed campaign keeps the log of a killed run beside its replacement; MLPerf voids such a
    run for time-to-train, so it must not count as one of the scored runs (nor as a failure).
    Only the runs and verdicts of the manifest are read (`state.RunVerdicts`): a manifest
    damaged elsewhere still lets the logs be scored."""
    manifest = folder / "campaign.json"
    if not manifest.is_file():
        return []
    data = read_json(manifest, hint="the campaign folder looks damaged; re-create it")
    try:
        verdicts = st.RunVerdicts.from_json(data)
    except st.ShapeError as error:
        raise st.damaged(manifest, error) from error
    excluded = []
    for index, judged in verdicts.verdicts():
        if judged.verdict not in _NOT_COUNTED:
            continue
        run = st.run_label(index)
        own = f"{run}_{layout.job_file_id(judged.job_id)}_" if judged.job_id else None
        reason = f"{judged.verdict}: {judged.reason or ''}".strip()
        excluded += [
            (log, reason)
            for log in logs
            if log.name == f"{run}.log" or (own and log.name.startswith(own))
        ]
    return excluded


def _write(paths: CampaignPaths, name: str, text: str) -> None:
    """A file of results/, never written through a link (see `safeopen.replace_inside`)."""
    from hpcrepro.safeopen import cannot_write, replace_inside

    try:
        paths.results.mkdir(exist_ok=True)
        replace_inside(paths.root, f"results/{name}", text.encode())
    except OSError as error:
        raise cannot_write(paths.results / name, error) from None


def write_report(paths: CampaignPaths) -> str | None:
    """The results area's score report of the campaign's logs; returns its one-line outcome."""
    try:
        from hpcrepro.results.collect import collect as score_logs
        from hpcrepro.results.inputs import resolve
        from hpcrepro.results.report import render
    except ImportError:
        return None
    try:
        collection = score_logs(resolve(paths.root, None, None, None, exclude=not_counted))
    except UserError as error:
        text = f"no report: {error.render()}"
        _write(paths, "report.md", text + "\n")
        return text
    _write(paths, "report.md", render(collection, "md"))
    _write(paths, "report.json", render(collection, "json"))
    with contextlib.suppress(ImportError):  # no matplotlib for the plot: md and JSON stand
        _write(paths, "report.html", render(collection, "html"))
    if collection.score.valid:
        return f"score written to {paths.results / 'report.md'}"
    return f"no valid score yet ({collection.score.reason}); see {paths.results / 'report.md'}"


def main(argv: list[str]) -> int:
    paths = CampaignPaths(Path(argv[0]))
    result = collect(paths.root)
    print(f"hpcrepro: {result['valid_runs']} of {result['runs_required']} required runs valid")
    for run in result["runs"]:
        print(f"  run {run['run']:02d}: {run['verdict']} ({run['reason']})")
    report = write_report(paths)
    if report:
        print(f"hpcrepro: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
