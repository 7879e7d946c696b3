"""The tiny workload across two nodes of the real test Slurm cluster: srun, gloo, one MLLOG log."""

from __future__ import annotations

import subprocess

import pytest

pytest.importorskip("torch")

from test_workload_train import (
    TRAIN,
    base_env,
    check_compliance,
    mllog,
    pack_dataset,
    write_synthetic_imagenet,
)


@pytest.mark.slurm
@pytest.mark.slow
def test_two_nodes_one_task_each_train_with_gloo(slurm_cluster, tmp_path):
    write_synthetic_imagenet(tmp_path / "raw")
    data = pack_dataset(tmp_path / "raw", tmp_path / "data")
    env = {**slurm_cluster.env, **base_env(data)}  # the cluster's SLURM_CONF, our PYTHONPATH
    env.update({"SEED": "3", "BATCHSIZE": "16", "DGXNNODES": "2", "DGXNGPU": "1"})
    command = [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        f"--partition={slurm_cluster.partition}",
        "--time=10",
        "--kill-on-bad-exit=1",
        *TRAIN,
    ]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=420, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Each rank announces its node on stderr: the two tasks ran on the cluster's two nodes.
    nodes = {
        line.split(" on node ")[1].split(",")[0]
        for line in result.stderr.splitlines()
        if line.startswith("hpcrepro.workload: rank ") and " on node " in line
    }
    assert len(nodes) == 2 and nodes <= set(slurm_cluster.node_names), result.stderr
    events = mllog(result.stdout)
    by_key = {event["key"]: event for event in events}
    assert by_key["global_batch_size"]["value"] == 32
    assert by_key["submission_platform"]["value"].startswith("2x")
    assert by_key["run_stop"]["metadata"]["status"] == "success"
    assert sum(1 for e in events if e["key"] == "run_start") == 1
    log = tmp_path / "slurm.log"
    log.write_text(result.stdout)
    checked = check_compliance(log)
    assert checked.returncode == 0, checked.stdout + checked.stderr
