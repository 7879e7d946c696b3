"""Proof on the real test cluster: NVIDIA's own code of every round, launched through real pyxis
and enroot as hpcrepro's job launches it, scores exactly as MLCommons scored NVIDIA's run.

For one catalog entry of each round, the stand-in image holds NVIDIA's real implementation folder,
mlperf-common and mlperf-logging (tests/runtime/images.py); only train_imagenet.py is replaced, by
a replay of the published result logs through NVIDIA's own logger. The campaign's job logs the
submission and cache_clear events through the image's mlperf_log_utils, as run.sub does. Then
mlperf-logging's checker must pass every converged run, `status` must count exactly the runs
`collect` scores, and the score must equal the published one. A failing cache drop must leave
no valid run.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from campaign_helpers import all_finished, cli_env, hpcrepro, wait_for
from pyxis_helpers import RESULTS, leftover_containers, nvidia_site, require_pyxis

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# (round, catalog entry, NVIDIA's published result folder of the same code and size)
CASES = [
    ("r2.1", "dgxh100_1x8", "v2.1/NVIDIA/dgxh100_preview"),
    ("r3.0", "dgxh100_1x8", "v3.0/NVIDIA/dgxh100_ngc23.04_mxnet"),
    ("r3.1", "dgxh100_1x8", "v3.1/NVIDIA/eos_ngc23.09_mxnet"),
    ("r4.0", "h200_1x8", "v4.0/NVIDIA/h200_ngc24.04_mxnet"),
]


def published(folder: str) -> tuple[float, set[str]]:
    """MLCommons' score of a result folder and the files its checker failed (scores.csv)."""
    version, submitter, system = folder.split("/")
    with open(RESULTS / "scores.csv") as handle:
        for row in csv.DictReader(handle):
            if (row["version"], row["submitter"], row["system"]) == (version, submitter, system):
                return float(row["score_minutes"]), set(filter(None, [row["compliance_failures"]]))
    raise AssertionError(f"{folder} is not in scores.csv")


def run_logs(campaign: Path) -> list[Path]:
    return sorted((campaign / "logs").glob("run-*.log"))


@pytest.mark.parametrize(("version", "system", "folder"), CASES, ids=[c[0] for c in CASES])
def test_nvidias_code_on_real_pyxis_scores_as_published(
    slurm_cluster, tmp_path: Path, version: str, system: str, folder: str
) -> None:
    require_pyxis(slurm_cluster.env)
    replay = RESULTS / folder
    score, failed_files = published(folder)
    site = nvidia_site(tmp_path, version, replay)
    env = cli_env(tmp_path, slurm_cluster.env)
    name = f"proof-{version}"
    hpcrepro(
        "submit",
        "--system",
        system,
        "--version",
        version,
        "--site",
        str(site),
        "--name",
        name,
        "--runs",
        "5",
        "--runs-per-job",
        "5",
        env=env,
        timeout=300,
    )
    status = wait_for(all_finished(name, env), timeout=900, what=f"the {version} campaign")
    campaign = tmp_path / "logs" / name
    logs = run_logs(campaign)
    assert len(logs) == 5, sorted(p.name for p in (campaign / "logs").iterdir())

    # What the job logged through NVIDIA's own mlperf_log_utils, as run.sub does.
    for log in logs:
        text = log.read_text()
        assert re.search(r'"key": "submission_org", "value": "(hpcrepro-tests|NVIDIA)"', text)
        assert text.count('"key": "cache_clear", "value": true') == 1
        dlpal = next(line for line in text.splitlines() if line.startswith(":::DLPAL"))
        assert dlpal.split()[1].endswith("image.sqsh")
        # v3.1 and v4.0 write MLPERF_CLUSTER_NAME (unset here) and DGXSYSTEM at the end
        assert dlpal.endswith("  DGXH100") == (version in ("r3.1", "r4.0")), dlpal
        assert (":::SYSJSON {" in text) == (version == "r4.0")
    if version != "r2.1":  # mlperf-common reads the site's submission settings; v2.1 hard-codes
        assert '"value": "1xtest_cluster"' in logs[0].read_text()

    # mlperf-logging's checker, run in the job (the image's, or hpcrepro's when it is stale).
    checked = sorted((campaign / "logs").glob("compliance_run-*.txt"))
    assert len(checked) == 5
    verdicts = ["SUCCESS" in path.read_text() for path in checked]
    assert verdicts.count(False) == len(failed_files)

    # status counts exactly what collect scores; collect gives MLCommons' score, with the
    # scaling MLCommons used (the folder's scaling.json, or none), as its summarizer does
    if (replay / "scaling.json").is_file():
        shutil.copy(replay / "scaling.json", campaign / "logs" / "scaling.json")
    report = json.loads(
        hpcrepro("collect", str(campaign), "--format", "json", "--scaling", "folder", env=env,
                 timeout=300).stdout
    )
    assert report["summary"]["score_minutes"] == pytest.approx(score, rel=1e-12)
    counted = sum(1 for run in report["runs"] if run["counts"])
    assert status["runs"]["valid"] == counted == 5 - len(failed_files), status
    train = next(row for row in status["stages"] if row["stage"] == "runs-01-05")
    for index, judged in train["verdicts"].items():  # a run that does not count says why
        assert judged["verdict"] == "valid" or judged["reason"], (index, judged)
    assert not leftover_containers(slurm_cluster.env, train["job_id"])
    if not failed_files:
        return
    # resume replaces the run that failed compliance; the campaign then has its five
    resumed = hpcrepro("resume", name, env=env, timeout=300)
    assert "run-06" in resumed.stdout, resumed.stdout
    status = wait_for(all_finished(name, env), timeout=900, what="the resumed campaign")
    replacement = next(row for row in status["stages"] if row["stage"] == "run-06")
    assert replacement["verdicts"]["6"]["verdict"] == "valid", replacement
    assert status["runs"]["valid"] == 5


def test_a_failed_cache_drop_leaves_no_valid_run(slurm_cluster, tmp_path: Path) -> None:
    """NVIDIA's job stops when the cache drop fails; hpcrepro's does too, and nothing claims
    cache_clear: status and collect both find no valid run."""
    require_pyxis(slurm_cluster.env)
    site = nvidia_site(tmp_path, "r4.0", RESULTS / CASES[3][2], drop_caches="false")
    env = cli_env(tmp_path, slurm_cluster.env)
    submit = ["submit", "--system", "h200_1x8", "--version", "r4.0", "--site", str(site)]
    submit += ["--name", "nodrop", "--runs", "2", "--runs-per-job", "2"]
    refused = hpcrepro(*submit, env=env, timeout=300, check=False)
    # the site check runs the command on a node first and stops the submit
    assert refused.returncode == 2, refused.stderr
    assert "drop_caches_command: 'false' failed" in refused.stderr
    assert not (tmp_path / "logs" / "nodrop").exists()
    # past the check (a node whose sudo rule differs from the one probed), the job itself stops
    hpcrepro(*submit, "--no-site-check", env=env, timeout=300)
    status = wait_for(all_finished("nodrop", env), timeout=600, what="the campaign")
    campaign = tmp_path / "logs" / "nodrop"
    logs = run_logs(campaign)
    assert len(logs) == 1  # the job stopped at its first run
    text = logs[0].read_text()
    assert '"key": "cache_clear"' not in text and "dropping the page cache failed" in text
    assert status["runs"]["valid"] == 0
    collected = hpcrepro("collect", str(campaign), env=env, check=False, timeout=300)
    assert collected.returncode != 0 and "no valid" in (collected.stdout + collected.stderr).lower()
