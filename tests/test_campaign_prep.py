"""The prep stage of a campaign: planned only when dataset_dir is not a prepared data set and
imagenet_dir is set; its script runs `hpcrepro prep imagenet` on the host; runs wait for it.

The last two tests run the whole graph (prep -> runs -> collect) for real: on this machine with the
local backend, and on the test Slurm cluster.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from campaign_helpers import SYSTEM, all_finished, cli_env, hpcrepro, make_site, stage, wait_for
from hpcrepro.campaign import engine, plan
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.state import Inputs, Manifest
from hpcrepro.config import resolve
from hpcrepro.errors import UserError
from hpcrepro.prep.verify import file_entry, write_manifest
from hpcrepro.scheduler.slurm import sbatch_args
from prep_data import make_imagenet
from test_campaign_engine import _no_slurm_env

ONE_NODE = ["nodes=1", "gpus_per_node=2"]
HOSTILE = "we$(touch PWNED) `id` 'q\" ;x"


def unprepared_site(root: Path, **extra: Any) -> Path:
    """A site whose dataset_dir is empty (make_site's placeholder files removed)."""
    site = make_site(root, **extra)
    for path in (root / "data").iterdir():
        path.unlink()
    return site


def config(site: Path, *overrides: str) -> Any:
    return resolve("dgxa100_1x8", "r2.1", site, [*ONE_NODE, *overrides])


def build(cfg: Any, root: Path, runs: int = 2) -> Manifest:
    prep = plan.dataset_needs_prep(cfg)
    inputs = Inputs(system="dgxa100_1x8", version="r2.1")
    return plan.build(cfg, CampaignPaths(root / "c"), "c", runs, 1, "slurm", inputs, prep=prep)


def tiny_raw(root: Path) -> Path:
    """3 classes x 6 train images, 1 val image per class: real JPEGs, extracted layout."""
    return make_imagenet(root, classes=3, train_per_class=6, val_per_class=1, tars=False).extracted


# --- planning


def test_unprepared_dataset_with_imagenet_dir_gets_a_prep_stage_first(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    manifest = build(config(unprepared_site(tmp_path, imagenet_dir=str(raw))), tmp_path)
    by = manifest.by_name()
    assert [s.name for s in manifest.stages] == ["prep", "run-01", "run-02", "collect"]
    assert by["run-01"].after == ["prep"] and by["run-01"].dependency == "afterok"
    paths = CampaignPaths(tmp_path / "c")
    token = by["run-02"].jobs[0].token
    args = sbatch_args(engine.job_request(paths, manifest, by["run-02"], token, ["41"]))
    assert "--dependency=afterok:41" in args and "--kill-on-invalid-dep=yes" in args
    script = (paths.scripts / "prep.sbatch").read_text()
    assert f"readonly DATASET={tmp_path / 'data'}" in script
    assert f'--raw {raw} --out "$DATASET" --workers "$WORKERS"' in script
    assert 'readonly WORKERS="${SLURM_CPUS_ON_NODE:-$(nproc)}"' in script
    assert f"#SBATCH --time={plan.PREP_STAGE_MINUTES}" in script
    assert "--exclusive" not in script and "--cpus-per-task" not in script  # site: exclusive false


def test_image_and_prep_both_come_before_the_runs(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    site = unprepared_site(
        tmp_path,
        imagenet_dir=str(raw),
        runtime="pyxis",
        image="nvcr.io/nvidia/mxnet:23.04-py3",
        image_cache_dir=str(tmp_path / "cache"),
        train_command=None,
        exclusive=True,
        prep_workers=12,
    )
    manifest = build(config(site), tmp_path, runs=1)
    assert manifest.by_name()["run-01"].after == ["image", "prep"]
    script = (tmp_path / "c" / "scripts" / "prep.sbatch").read_text()
    assert "#SBATCH --exclusive" in script and "#SBATCH --cpus-per-task=12" in script
    assert "readonly WORKERS=12" in script
    assert "srun " not in script and "--container" not in script  # prep runs on the host


def test_prepared_dataset_has_no_prep_stage_and_dry_run_says_so(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    site = make_site(tmp_path, imagenet_dir=str(raw))
    data = tmp_path / "data"
    write_manifest(data, {}, {n: file_entry(data / n) for n in ("train.rec", "val.rec")}, {})
    assert plan.dataset_needs_prep(config(site)) is False
    done = hpcrepro(
        "submit", *SYSTEM, "--site", str(site), "--name", "ready", "--dry-run",
        env=_no_slurm_env(tmp_path),
    )  # fmt: skip
    assert "# graph: run-01; run-02; run-03; run-04; run-05; collect" in done.stdout
    assert f"# dataset: {str(data)!r} is prepared: no prep stage" in done.stdout
    # files made some other way (no manifest) are taken as they are, as before
    (data / "manifest.json").unlink()
    assert plan.dataset_needs_prep(config(site)) is False


def test_dry_run_shows_the_prep_stage_and_its_dependency(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    site = unprepared_site(tmp_path, imagenet_dir=str(raw))
    done = hpcrepro(
        "submit", *SYSTEM, "--site", str(site), "--runs", "1", "--name", "p", "--dry-run",
        env=_no_slurm_env(tmp_path),
    )  # fmt: skip
    assert "# graph: prep; run-01 (afterok prep); collect (afterany run-01)" in done.stdout
    assert f"the prep stage makes {str(tmp_path / 'data')!r} from {str(raw)!r}" in done.stdout
    assert '"--dependency=afterok:$job_prep" --kill-on-invalid-dep=yes' in done.stdout


def test_unprepared_dataset_without_imagenet_dir_is_refused_with_a_hint(tmp_path: Path) -> None:
    site = unprepared_site(tmp_path)
    done = hpcrepro(
        "submit", *SYSTEM, "--site", str(site), "--backend", "local",
        env=_no_slurm_env(tmp_path), check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "train.rec is missing" in done.stderr and "imagenet_dir" in done.stderr


@pytest.mark.parametrize("make", ["missing", "file"])
def test_imagenet_dir_that_is_not_a_folder_is_named(tmp_path: Path, make: str) -> None:
    raw = tmp_path / "raw.tar"
    if make == "file":
        raw.write_bytes(b"x")
    with pytest.raises(UserError) as caught:
        plan.dataset_needs_prep(config(unprepared_site(tmp_path, imagenet_dir=str(raw))))
    assert "imagenet_dir" in str(caught.value) and f"{raw} is not a folder" in str(caught.value)


def test_foreign_partial_dataset_is_refused_before_submitting(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    site = unprepared_site(tmp_path, imagenet_dir=str(raw))
    (tmp_path / "data" / "train.rec").write_bytes(b"half")
    with pytest.raises(UserError) as caught:
        plan.dataset_needs_prep(config(site))
    assert "already holds train.rec but no hpcrepro manifest.json" in str(caught.value)
    # an unfinished hpcrepro prep is resumed by the stage instead
    (tmp_path / "data" / ".hpcrepro-prep").mkdir()
    (tmp_path / "data" / ".hpcrepro-prep" / "plan.json").write_text("{}")
    assert plan.dataset_needs_prep(config(site)) is True


def test_site_keys_are_made_absolute_and_checked(tmp_path: Path) -> None:
    site = unprepared_site(tmp_path)
    text = site.read_text() + "imagenet_dir: raw\nprep_workers: 4\n"
    site.write_text(text)
    cfg = config(site)
    assert cfg.site.imagenet_dir == tmp_path / "raw" and cfg.site.prep_workers == 4
    site.write_text(text.replace("prep_workers: 4", "prep_workers: 0"))
    with pytest.raises(UserError) as caught:
        config(site)
    assert "prep_workers" in str(caught.value)


def test_failed_prep_gets_a_new_attempt_on_resume(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    manifest = build(config(unprepared_site(tmp_path, imagenet_dir=str(raw))), tmp_path)
    for item in manifest.stages:
        item.jobs[-1].state = "failed" if item.name == "prep" else "cancelled"
    planned = engine.plan_resume(manifest)
    assert planned == ["prep", "run-03", "run-04", "collect"]
    by = manifest.by_name()
    assert len(by["prep"].jobs) == 2 and by["prep"].jobs[-1].state == "planned"
    assert by["run-03"].after == ["prep"] and by["run-04"].replaces == ["run-02"]


# --- the script itself


def test_prep_script_quotes_hostile_paths_and_really_prepares(tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path / f"raw {HOSTILE}")
    site = unprepared_site(tmp_path, imagenet_dir=str(raw), dataset_dir=str(tmp_path / HOSTILE))
    manifest = build(config(site), tmp_path, runs=1)
    assert manifest.stages[0].name == "prep"
    script = tmp_path / "c" / "scripts" / "prep.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    check = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    done = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    report = json.loads(
        hpcrepro("prep", "verify", str(tmp_path / HOSTILE), "--json", env=cli_env(tmp_path)).stdout
    )
    assert report["ok"] and report["splits"]["train"]["records"] == 18
    # a rerun (resume, or a second campaign's prep) finds the data set complete
    again = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to do" in again.stderr


# --- the whole graph, for real


def _submit(root: Path, name: str, backend: str, env: dict[str, str]) -> str:
    raw = tiny_raw(root / "imagenet")
    site = unprepared_site(root, imagenet_dir=str(raw))
    overrides = [arg for pair in ONE_NODE for arg in ("--set", pair)]
    return hpcrepro(
        "submit", *SYSTEM, "--site", str(site), "--runs", "2", "--name", name, *overrides,
        "--backend", backend, env=env,
    ).stdout  # fmt: skip


def _check_prepared(root: Path, env: dict[str, str]) -> None:
    report = json.loads(hpcrepro("prep", "verify", str(root / "data"), "--json", env=env).stdout)
    assert report["ok"] and report["manifest"], report
    assert report["splits"]["train"]["records"] == 18 and report["splits"]["val"]["records"] == 3


def test_local_backend_prepares_then_trains_then_collects(tmp_path: Path) -> None:
    env = _no_slurm_env(tmp_path)
    assert "submitted 4 job(s)" in _submit(tmp_path, "localprep", "local", env)
    status = wait_for(all_finished("localprep", env), 90, "the local campaign")
    assert [row["stage"] for row in status["stages"]] == ["prep", "run-01", "run-02", "collect"]
    assert [row["state"] for row in status["stages"]] == ["completed"] * 4
    assert status["runs"] == {"valid": 2, "coming": 0, "lost": 0, "required": 2}
    _check_prepared(tmp_path, env)
    manifest = json.loads((tmp_path / "logs" / "localprep" / "campaign.json").read_text())
    jobs = {s["name"]: s["jobs"][-1] for s in manifest["stages"]}
    assert jobs["run-01"]["start"] >= jobs["prep"]["end"]
    assert (tmp_path / "logs" / "localprep" / "results" / "summary.json").is_file()


@pytest.mark.slurm
def test_slurm_campaign_prepares_the_dataset_before_the_runs(slurm_cluster, tmp_path: Path) -> None:
    from test_slurm_campaign import sacct_times

    env = cli_env(tmp_path, slurm_cluster.env)
    assert "submitted 4 job(s)" in _submit(tmp_path, "slurmprep", "slurm", env)
    status = wait_for(all_finished("slurmprep", env), 120, "the Slurm campaign")
    assert [row["state"] for row in status["stages"]] == ["completed"] * 4
    assert status["runs"]["valid"] == 2
    _check_prepared(tmp_path, env)
    ids = {name: stage(status, name)["job_id"] for name in ("prep", "run-01", "run-02", "collect")}
    times = sacct_times(slurm_cluster.env, list(ids.values()))
    prep, run1, run2, collect = (times[ids[name]] for name in ids)
    assert prep[0] == "COMPLETED"
    assert run1[1] >= prep[2] and run2[1] >= prep[2], "a run started before prep ended"
    assert collect[1] >= max(run1[2], run2[2]), "collect started before the runs ended"
    summary = tmp_path / "logs" / "slurmprep" / "results" / "summary.json"
    assert [run["verdict"] for run in json.loads(summary.read_text())["runs"]] == ["valid"] * 2
