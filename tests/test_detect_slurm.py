"""`detect --all-nodes` on the real two-node test cluster (tests/slurm/start.sh): one job through
the Slurm backend runs the detection once on each node and the descriptions come back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.detect.host import parse_slurm_version
from hpcrepro.detect.model import NodeDescription


@pytest.fixture
def slurm_env(slurm_cluster) -> dict[str, str]:
    """Environment that talks to the shared test cluster (tests/conftest.py)."""
    return slurm_cluster.env


@pytest.mark.slurm
def test_all_nodes_runs_on_each_node(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("partition: debug\nsbatch_args: [--comment=hpcrepro-detect-test]\n")
    jobs = tmp_path / "jobs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcrepro",
            "detect",
            "--all-nodes",
            "--nodes",
            "2",
            "--site",
            str(site),
            "--job-folder",
            str(jobs),
            "--timeout-min",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env=slurm_env,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "submitted detection job" in done.stderr
        and "all 2 nodes are alike (node1, node2)" in done.stderr
    )
    nodes = [NodeDescription.from_dict(item) for item in json.loads(done.stdout)]
    assert sorted(node.slurm_node or "" for node in nodes) == ["node1", "node2"]
    version = subprocess.run(
        ["sinfo", "--version"], capture_output=True, text=True, check=True, env=slurm_env
    )
    assert {node.slurm_version for node in nodes} == {parse_slurm_version(version.stdout)}
    (script,) = jobs.glob("detect-*/detect.sbatch")  # the job's own folder in --job-folder
    lines = script.read_text().splitlines()
    assert "#SBATCH --partition=debug" in lines and "#SBATCH --nodes=2" in lines
    assert "#SBATCH --comment=hpcrepro-detect-test" in lines  # the site's sbatch_args reach it
    found = sorted(path.name for path in script.parent.glob("node-*.json"))
    assert found == ["node-0.json", "node-1.json"]


@pytest.mark.slurm
@pytest.mark.slurm
def test_refused_job_is_a_user_error(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("partition: no_such_partition\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcrepro",
            "detect",
            "--all-nodes",
            "--nodes",
            "2",
            "--site",
            str(site),
            "--job-folder",
            str(tmp_path / "jobs"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=slurm_env,
    )
    assert done.returncode == 2, done.stderr
    assert "Slurm refused detect.sbatch" in done.stderr and "sinfo -s" in done.stderr
    assert "invalid partition" in done.stderr.lower() and "Traceback" not in done.stderr
