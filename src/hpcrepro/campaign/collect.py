"""The collection stage: settle every job's state, judge every run, write results/summary.json.

Runs as the campaign's last job (`python -m hpcrepro.campaign.collect CAMPAIGN_DIR`), after all
runs in any state, and again on demand. The summary lists every run with its verdict, so the
results area (scores, compliance, reports) starts from a settled campaign.
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
                    "log": str(paths.run_log(index)),
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
        backend = make_backend(manifest["backend"], manifest)
        engine.refresh(paths, manifest, backend)
        engine.judge_runs(paths, manifest)
        manifest_io.save(paths.manifest, manifest)
    result = summary(paths, manifest)
    paths.results.mkdir(parents=True, exist_ok=True)
    (paths.results / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str]) -> int:
    result = collect(Path(argv[0]))
    print(f"hpcrepro: {result['valid_runs']} of {result['runs_required']} required runs valid")
    for run in result["runs"]:
        print(f"  run {run['run']:02d}: {run['verdict']} ({run['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
