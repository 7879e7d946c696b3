"""`hpcrepro site init`, `site check` and submit's site check on the real two-node test Slurm
(sinfo, srun, pyxis, sacctmgr through slurmdbd)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from campaign_helpers import cli_env, hpcrepro
from campaign_helpers import make_site as campaign_site
from hpcrepro.config import resolve
from pyxis_helpers import require_pyxis

pytestmark = pytest.mark.slurm


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )


def test_site_init_writes_what_the_cluster_says(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    env = cli_env(tmp_path, slurm_cluster.env)
    data = tmp_path / "imagenet"
    data.mkdir()
    started = time.monotonic()
    done = run("site", "init", "-o", "site.yaml", "--dataset-dir", str(data), env=env, cwd=tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "site.yaml").read_text()
    assert done.stdout == text and "wrote " in done.stderr
    lines = {line.split(":")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert (
        lines["partition"]
        == 'partition: "debug"  # sinfo: the default partition, 2 node(s), no GPU GRES'
    )
    assert lines["gpu_request"].startswith('gpu_request: "none"  # sinfo: partition debug has no')
    assert lines["runtime"].startswith(
        'runtime: "pyxis"  # srun --help lists --container-image (pyxis); enroot on node'
    )
    assert lines["mpi"].startswith('mpi: "pmix"  # srun --mpi=list: pmix')
    assert "sacctmgr: root's only account" in lines["account"]
    assert lines["log_dir"].startswith(f'log_dir: "{tmp_path}/hpcrepro"  # shared: a marker')
    assert f'dataset_dir: "{data}"  # --dataset-dir; seen on node' in text
    # the probe cleaned up its marker, and the file is a site file hpcrepro loads
    assert not list(tmp_path.glob(".hpcrepro-shared-*"))
    cfg = resolve("dgxa100_8x8", "r3.0", tmp_path / "site.yaml")
    assert cfg.site.partition == "debug" and cfg.site.log_dir == tmp_path / "hpcrepro"
    assert took < 30, f"site init took {took:.1f} s"

    # never over an existing file without --force
    again = run("site", "init", "-o", "site.yaml", env=env, cwd=tmp_path)
    assert again.returncode == 2 and "site.yaml exists" in again.stderr
    assert "pass --force" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "site.yaml").read_text() == text
    forced = run("site", "init", "-o", "site.yaml", "--force", env=env, cwd=tmp_path)
    assert (
        forced.returncode == 0
        and "/PLACEHOLDER/set-dataset_dir-in-site.yaml" in (tmp_path / "site.yaml").read_text()
    )


def test_site_init_refuses_an_unknown_partition_and_needs_slurm(
    slurm_cluster, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, slurm_cluster.env)
    done = run("site", "init", "-o", "s.yaml", "--partition", "debg", env=env, cwd=tmp_path)
    assert done.returncode == 2 and "partition 'debg' is not one sinfo lists" in done.stderr
    assert "did you mean debug?" in done.stderr and not (tmp_path / "s.yaml").exists()
    bare = dict(env, PATH="/nonexistent")
    (tmp_path / "s.yaml").write_text(f"dataset_dir: {tmp_path}\nlog_dir: {tmp_path}\n")
    for args in (["site", "init", "-o", "new.yaml"], ["site", "check", "--site", "s.yaml"]):
        done = run(*args, env=bare, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "no Slurm here: sinfo and srun not found on PATH" in done.stderr
        assert "Traceback" not in done.stderr


def test_site_check_of_a_good_site_is_clean(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    env = cli_env(tmp_path, slurm_cluster.env)
    site = campaign_site(tmp_path, runtime="pyxis", image="/x.sqsh", mpi="pmix")
    started = time.monotonic()
    done = run("site", "check", "--site", str(site), env=env, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "site check: no problems found\n"), done.stderr
    assert time.monotonic() - started < 20
    done = run(
        "site",
        "check",
        "--site",
        str(site),
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "--set",
        "nodes=2",
        "--set",
        "gpus_per_node=1",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and json.loads(done.stdout) == {"errors": 0, "findings": []}


def test_site_check_reports_each_problem_with_its_fix(slurm_cluster, tmp_path: Path) -> None:
    env = cli_env(tmp_path, slurm_cluster.env)
    site = campaign_site(tmp_path, partition="debg")
    done = run("site", "check", "--site", str(site), env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "error: partition: partition 'debg' is not one sinfo lists" in done.stdout
    assert "fix: did you mean debug?" in done.stdout

    broken = campaign_site(
        tmp_path,
        runtime="apptainer",
        image="/x.sif",
        mpi="pmi3",
        dataset_dir=str(tmp_path / "nowhere"),
        drop_caches_command="echo not permitted >&2; exit 3",
    )
    done = run(
        "site",
        "check",
        "--site",
        str(broken),
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    found = {f["key"]: f for f in json.loads(done.stdout)["findings"]}
    assert set(found) == {"partition", "mpi", "runtime", "dataset_dir", "drop_caches_command"}
    assert "has 2 node(s), dgxa100_8x8 r3.0 needs 8" in found["partition"]["problem"]
    assert "srun has no MPI plugin 'pmi3'" in found["mpi"]["problem"]
    assert "neither apptainer nor singularity is on node" in found["runtime"]["problem"]
    assert f"{tmp_path / 'nowhere'} is not visible on node" in found["dataset_dir"]["problem"]
    assert "failed on node1 (exit 3: not permitted)" in found["drop_caches_command"]["problem"]
    assert "drop_caches_command: null" in found["drop_caches_command"]["fix"]


def test_submit_checks_the_site_first(slurm_cluster, tmp_path: Path) -> None:
    env = cli_env(tmp_path, slurm_cluster.env)
    site = campaign_site(tmp_path, drop_caches_command="exit 4")
    args = [
        "submit",
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "--site",
        str(site),
        "--set",
        "nodes=1",
        "--set",
        "gpus_per_node=1",
        "--runs",
        "1",
        "--name",
        "checked",
    ]
    done = run(*args, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: drop_caches_command: 'exit 4' failed on node1 (exit 4)" in done.stderr
    assert "the site check found 1 error(s) (above); nothing was submitted" in done.stderr
    assert "--no-site-check" in done.stderr
    assert not (tmp_path / "logs" / "checked").exists()  # nothing written
    # skipped on request: the campaign is submitted (and cancelled here)
    done = hpcrepro(*args, "--no-site-check", env=env)
    assert "follow it with: hpcrepro status checked" in done.stdout
    hpcrepro("cancel", "checked", env=env, check=False)
    # the local backend needs no cluster: no check
    local = campaign_site(tmp_path / "local", drop_caches_command="exit 4")
    done = run(
        "submit",
        "--system",
        "dgxa100_1x8",
        "--version",
        "r2.1",
        "--site",
        str(local),
        "--backend",
        "local",
        "--runs",
        "1",
        "--set",
        "gpus_per_node=1",
        "--name",
        "local",
        env=env,
        cwd=tmp_path,
    )
    assert "site check" not in done.stderr and done.returncode == 0, done.stderr
    hpcrepro("cancel", "local", env=env, check=False)


def test_the_written_site_file_is_yaml_with_comments_only(slurm_cluster, tmp_path: Path) -> None:
    env = cli_env(tmp_path, slurm_cluster.env)
    done = run("site", "init", "-o", "s.yaml", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert data["partition"] == "debug" and data["dataset_dir"].startswith("/PLACEHOLDER/")
