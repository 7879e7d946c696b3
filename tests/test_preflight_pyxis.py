"""The in-job preflight under real pyxis and enroot on the two-node test cluster.

Inside the container, nvidia-smi is NVIDIA's stand-in of the test images (it reports
$HPCREPRO_STAND_IN_GPUS GPUs named "stand-in GPU") and all_reduce_perf_mpi the stand-in of
tests/runtime/stand-ins/ (it prints nccl-tests' report with $HPCREPRO_STAND_IN_BUSBW). A failed
check stops the job before any run, with exit code 3 and its reason in the log folder, which
`hpcrepro status` shows.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from campaign_helpers import all_finished, cli_env, hpcrepro, wait_for
from hpcrepro.config import resolve
from hpcrepro.render import render_training
from pyxis_helpers import DATASET_FILES, STAND_INS, leftover_containers, require_pyxis
from test_pyxis_launch import make_site, submit

pytestmark = pytest.mark.slurm

NCCL_STAND_IN = f"{STAND_INS / 'all_reduce_perf_mpi'}:/usr/local/bin/all_reduce_perf_mpi:ro"


def preflight_site(root: Path, gpus: int, **extra: object) -> Path:
    """make_site's recorder job, with the preflight's GPU check on and a prepared data set."""
    site = make_site(
        root,
        env=json.dumps({"HPCREPRO_STAND_IN_GPUS": str(gpus), "HPCREPRO_STAND_IN_BUSBW": "12.5"}),
        preflight=json.dumps(
            {"gpus": True, "gpu_model": "stand-in", "topology": True, **extra.pop("preflight", {})}
        ),  # type: ignore[dict-item]
        **extra,
    )
    for name in DATASET_FILES:
        (root / "data" / name).write_bytes(b"\0" * 16)
    return site


def test_too_few_gpus_stop_a_campaign_before_any_run_and_status_says_why(
    slurm_cluster, tmp_path: Path
) -> None:
    require_pyxis(slurm_cluster.env)
    site = preflight_site(tmp_path, gpus=1)
    env = cli_env(tmp_path, slurm_cluster.env)
    hpcrepro(
        "submit",
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "--site",
        str(site),
        "--set",
        "nodes=2",
        "--set",
        "gpus_per_node=2",
        "--name",
        "fewgpus",
        "--runs",
        "1",
        env=env,
        timeout=120,
    )
    status = wait_for(all_finished("fewgpus", env), timeout=300, what="the campaign")
    train = next(row for row in status["stages"] if row["stage"] == "run-01")
    assert train["state"] == "failed", train
    reason = train["verdicts"]["1"]["reason"]
    assert reason.startswith("never started: preflight failed: node"), reason
    assert "has 1 GPU(s), the system needs 2 per node" in reason
    campaign = tmp_path / "logs" / "fewgpus"
    assert not list((campaign / "logs").glob("run-*.log"))  # no run started
    assert not list((tmp_path / "rec").glob("*.json"))  # no task ran the training command
    (failed,) = (campaign / "logs").glob("preflight_*.failed")
    job_id = failed.name.removeprefix("preflight_").removesuffix(".failed")
    assert train["job_id"] == job_id
    # the job's exit code is the preflight's own
    sacct = subprocess.run(
        ["sacct", "-nX", "-P", "-j", job_id, "-o", "ExitCode"],
        capture_output=True,
        text=True,
        env=slurm_cluster.env,
        check=True,
    )
    assert sacct.stdout.split() == ["3:0"], sacct.stdout
    # what each node's nvidia-smi said is kept beside the logs
    report = (campaign / "logs" / f"preflight_{job_id}_gpus.txt").read_text()
    assert sorted(line.split("\t")[0] for line in report.splitlines()) == ["node1", "node2"]
    text = hpcrepro("status", "fewgpus", env=env, check=False).stdout
    assert "preflight failed: node" in text and "the system needs 2 per node" in text, text
    assert not leftover_containers(slurm_cluster.env, job_id)


def test_enough_gpus_pass_and_the_topology_is_kept(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    site = preflight_site(tmp_path, gpus=2)
    cfg = resolve("dgxa100_8x8", "r3.0", site, ["nodes=2", "gpus_per_node=2"])
    job_id, output = submit(
        render_training(cfg, job_name="enough", run_indices=[1]), tmp_path, slurm_cluster.env
    )
    assert "hpcrepro: 1 run(s) finished, 0 with a non-zero exit" in output, output
    assert "preflight: node1: 2 GPU(s) [stand-in GPU|stand-in GPU]" in output
    topology = (tmp_path / "logs" / f"topology_{job_id}.txt").read_text()
    assert "== node1" in topology and "== node2" in topology and "GPU0" in topology
    assert not list((tmp_path / "logs").glob("preflight_*.failed"))


def test_a_gpu_of_another_model_stops_the_job(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    site = preflight_site(tmp_path, gpus=2, preflight={"gpu_model": None})  # the catalog's A100
    cfg = resolve("dgxa100_8x8", "r3.0", site, ["nodes=1", "gpus_per_node=2"])
    job_id, output = submit(
        render_training(cfg, job_name="model", run_indices=[1]), tmp_path, slurm_cluster.env
    )
    reason = (tmp_path / "logs" / f"preflight_{job_id}.failed").read_text()
    assert "has a 'stand-in GPU' GPU, the system needs A100" in reason, output
    assert "no run was started" in output and not list((tmp_path / "logs").glob("run-*.log"))


def test_a_bus_bandwidth_below_the_threshold_stops_the_job(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    site = preflight_site(
        tmp_path,
        gpus=2,
        nccl_test="true",
        preflight={"min_busbw_gbps": 100},
        mounts=f"[{tmp_path / 'rec'}:/rec, {NCCL_STAND_IN}]",
    )
    cfg = resolve("dgxa100_8x8", "r3.0", site, ["nodes=2", "gpus_per_node=1"])
    job_id, output = submit(
        render_training(cfg, job_name="busbw", run_indices=[1]), tmp_path, slurm_cluster.env
    )
    reason = (tmp_path / "logs" / f"preflight_{job_id}.failed").read_text()
    assert "bus bandwidth 12.5 GB/s is below preflight.min_busbw_gbps 100" in reason, output
    assert "no run was started" in output
    assert not list((tmp_path / "logs").glob("run-*.log"))
    assert not list((tmp_path / "rec").glob("*.json"))


def test_a_bus_bandwidth_above_the_threshold_lets_the_runs_start(
    slurm_cluster, tmp_path: Path
) -> None:
    require_pyxis(slurm_cluster.env)
    site = preflight_site(
        tmp_path,
        gpus=1,
        nccl_test="true",
        preflight={"min_busbw_gbps": 10},
        mounts=f"[{tmp_path / 'rec'}:/rec, {NCCL_STAND_IN}]",
    )
    cfg = resolve("dgxa100_8x8", "r3.0", site, ["nodes=1", "gpus_per_node=1"])
    _, output = submit(
        render_training(cfg, job_name="busok", run_indices=[1]), tmp_path, slurm_cluster.env
    )
    assert "preflight: NCCL average bus bandwidth 12.5 GB/s (threshold 10)" in output, output
    assert "hpcrepro: 1 run(s) finished, 0 with a non-zero exit" in output
