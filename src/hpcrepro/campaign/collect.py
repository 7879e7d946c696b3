"""The collection stage: settle every job's state, judge every run, write the results.

Runs as the campaign's last job (`python -m hpcrepro.campaign.collect CAMPAIGN_DIR`), after all
runs in any state. `results/summary.json` lists every run with its verdict; when the results area
is installed, `results/report.md` and `report.json` hold its score, compliance and RCP verdicts
(the same as `hpcrepro collect CAMPAIGN_DIR`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hpcrepro.campaign import engine
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import stages as st
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.errors import UserError


def summary(paths: CampaignPaths, manifest: dict[str, Any]) -> dict[str, Any]:
    runs = []
    for stage in st.train_stages(manifest):
        job = st.current(stage) or {}
        for index in stage["runs"]:
            judged = stage["verdicts"].get(str(index), {})
            runs.append(
                {
                    "run": index,
                    "stage": stage["name"],
                    "log": str(paths.run_log(index, job.get("job_id"))),
                    "job_id": job.get("job_id"),
                    "job_state": job.get("state"),
                    "verdict": judged.get("verdict", "pending"),
                    "reason": judged.get("reason"),
                    "replaces": stage["replaces"],
                }
            )
    counts = engine.run_counts(manifest)
    return {
        "campaign": manifest["name"],
        "system": manifest.get("system"),
        "version": manifest.get("version"),
        "runs_required": manifest["runs_required"],
        "valid_runs": counts["valid"],
        "complete": counts["valid"] >= manifest["runs_required"],
        "runs": runs,
    }


def collect(campaign_dir: Path) -> dict[str, Any]:
    from hpcrepro.campaign.actions import make_backend

    paths = CampaignPaths(campaign_dir)
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        backend = make_backend(manifest["backend"], manifest, paths.root)
        engine.refresh(paths, manifest, backend)
        engine.judge_runs(paths, manifest)
        manifest_io.save(paths.manifest, manifest)
    result = summary(paths, manifest)
    _write(paths, "summary.json", json.dumps(result, indent=1) + "\n")
    return result


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
        collection = score_logs(resolve(paths.root, None, None, None))
    except UserError as error:
        text = f"no report: {error.render()}"
        _write(paths, "report.md", text + "\n")
        return text
    _write(paths, "report.md", render(collection, "md"))
    _write(paths, "report.json", render(collection, "json"))
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
