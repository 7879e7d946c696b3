"""The train job under real pyxis 0.24.0 and enroot 4.1.2 on the two-node test cluster.

What the job does, checked from inside the container: tasks on both nodes, one container per
node imported once and reused by name for every step, read-only data, the workdir, the
environment that reaches the tasks (and what must not), log names unique per job, container
cleanup; and how it fails: a registry image without a registry, an image without NVIDIA's code,
the NCCL test without nccl-tests or a GPU.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hpcrepro.config import resolve
from hpcrepro.render import render_training
from pyxis_helpers import image, images, leftover_containers, require_pyxis

pytestmark = pytest.mark.slurm

RECORDER = """\
import json, os, sys
record = {"env": dict(os.environ), "cwd": os.getcwd()}
try:
    open("/data/probe", "w")
    record["data_writable"] = True
except OSError as error:
    record["data_writable"] = error.strerror
name = "job%s-rank%s-seed%s.json" % (os.environ["SLURM_JOB_ID"], os.environ["SLURM_PROCID"],
                                   os.environ["SEED"])
json.dump(record, open(os.path.join("/rec", name), "w"))
"""


def make_site(root: Path, **extra: object) -> Path:
    data, logs, rec = root / "data", root / "logs", root / "rec"
    for folder in (data, logs, rec):
        folder.mkdir(parents=True, exist_ok=True)
    (rec / "record.py").write_text(RECORDER)
    lines = {
        "partition": "debug",
        "exclusive": "false",
        "runtime": "pyxis",
        "image": json.dumps(str(image(lambda: images.base_image() / "base.sqsh"))),
        "dataset_dir": str(data),
        "log_dir": str(logs),
        "mpi": "none",
        "workdir": "/opt",
        "drop_caches_command": "'true'",
        "check_compliance": "false",
        "train_command": "'python3 /rec/record.py'",
        "mounts": f"[{rec}:/rec]",
        "env": "{SITE_VALUE: 'a b $HOME `x`'}",
        **{key: str(value) for key, value in extra.items()},
    }
    site = root / "site.yaml"
    site.write_text("".join(f"{key}: {value}\n" for key, value in lines.items()))
    return site


def submit(script: str, root: Path, env: dict[str, str], name: str = "job") -> tuple[str, str]:
    """sbatch --wait the script from a shell that carries a variable that must not leak."""
    path = root / f"{name}.sbatch"
    path.write_text(script)
    done = subprocess.run(
        ["sbatch", "--parsable", "--wait", f"--output={root}/{name}-%j.out", str(path)],
        capture_output=True, text=True, timeout=600, cwd=root,
        env=dict(env, SUBMITTING_SHELL_ONLY="leaked"),
    )  # fmt: skip
    job_id = done.stdout.strip().split(";")[0]
    output = root / f"{name}-{job_id}.out"
    return job_id, (output.read_text() if output.exists() else "") + done.stderr


def test_two_node_job_in_real_pyxis(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    cfg = resolve("dgxa100_8x8", "r3.0", make_site(tmp_path), ["nodes=2", "gpus_per_node=2"])
    script = render_training(cfg, job_name="pyxis2", run_indices=[1, 2])
    job_id, output = submit(script, tmp_path, slurm_cluster.env)
    assert "hpcrepro: 2 run(s) finished, 0 with a non-zero exit" in output, output
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "rec").glob("job*.json"))]
    assert len(records) == 8  # 2 runs x 2 nodes x 2 tasks
    assert {r["env"]["SLURMD_NODENAME"] for r in records} == {"node1", "node2"}
    for record in records:
        env = record["env"]
        assert record["cwd"] == "/opt"  # the site's workdir
        assert record["data_writable"] == "Read-only file system"
        assert env["SITE_VALUE"] == "a b $HOME `x`"  # the site's env, literally
        assert env["DGXNGPU"] == "2" and env["MLPERF_RULESET"] == "3.0.0"
        assert env["HPCREPRO_DATA_DIR"] == "/data" and env["SLURM_JOB_ID"] == job_id
        assert "SUBMITTING_SHELL_ONLY" not in env  # the submitting shell does not leak
    # one container per node, created once and reused by name by every later step (what pyxis
    # logs in each slurmd's log, per step of this job)
    for node in ("node1", "node2"):
        log = Path(slurm_cluster.conf).parent.parent / "log" / f"slurmd-{node}.log"
        lines = [line for line in log.read_text().splitlines() if f"] [{job_id}." in line]
        assert sum("pyxis: creating container filesystem" in line for line in lines) == 1, node
        assert sum("pyxis: reusing existing container filesystem" in line for line in lines) >= 2
    assert not leftover_containers(slurm_cluster.env, job_id), "the job left its containers"

    # the same script again: new logs beside the old ones, none overwritten
    before = {p.name: p.read_text() for p in (tmp_path / "logs").glob("*.log")}
    submit(script, tmp_path, slurm_cluster.env, name="again")
    after = {p.name: p.read_text() for p in (tmp_path / "logs").glob("*.log")}
    assert len(after) == 2 * len(before) == 4
    assert all(after[name] == text for name, text in before.items())


def test_a_registry_image_without_a_registry_fails_cleanly(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    site = make_site(tmp_path, image="localhost:5999/nvidia/mxnet:23.04-py3")
    cfg = resolve("dgxa100_8x8", "r3.0", site, ["nodes=1", "gpus_per_node=1"])
    _, output = submit(render_training(cfg, job_name="reg", run_indices=[1]), tmp_path,
                            slurm_cluster.env)  # fmt: skip
    assert "pyxis could not start image localhost:5999#nvidia/mxnet:23.04-py3" in output, output
    assert "pyxis:" in output  # pyxis' own reason is in the job output above ours
    assert not list((tmp_path / "logs").glob("*.log")) and not list(
        (tmp_path / "rec").glob("*.json")
    )


def test_an_image_without_nvidias_code_stops_the_job(slurm_cluster, tmp_path: Path) -> None:
    require_pyxis(slurm_cluster.env)
    site = make_site(tmp_path, train_command="null", workdir="/workspace/image_classification")
    cfg = resolve("dgxa100_8x8", "r3.0", site, ["nodes=1", "gpus_per_node=1"])
    _, output = submit(render_training(cfg, job_name="nocode", run_indices=[1]), tmp_path,
                       slurm_cluster.env)  # fmt: skip
    assert "has no /workspace/image_classification/run_and_time.sh" in output, output
    assert "hpcrepro image build --system dgxa100_8x8 --version r3.0" in output
    assert not list((tmp_path / "logs").glob("*.log"))


def test_the_nccl_test_runs_nvidias_command_and_a_failure_stops_the_job(
    slurm_cluster, tmp_path: Path
) -> None:
    """No GPU and no nccl-tests here: the test's launch is what NVIDIA's run.sub runs, and its
    failure keeps every run from starting."""
    require_pyxis(slurm_cluster.env)
    cfg = resolve("dgxa100_8x8", "r3.0", make_site(tmp_path, nccl_test="true"),
                  ["nodes=2", "gpus_per_node=1"])  # fmt: skip
    script = render_training(cfg, job_name="nccl", run_indices=[1])
    assert "all_tasks all_reduce_perf_mpi -b 51.2M -e 51.2M -d half -G 1" in script
    job_id, output = submit(script, tmp_path, slurm_cluster.env)
    assert "NCCL_TEST = 1 (all_reduce_perf_mpi on 2 tasks" in output, output
    assert "NCCL all-reduce test failed" in output and "no run was started" in output
    (nccl,) = (tmp_path / "logs").glob(f"nccl_{job_id}_*.txt")
    assert "all_reduce_perf_mpi" in nccl.read_text()  # the exec error of every task
    assert not list((tmp_path / "logs").glob("*.log"))
    assert not leftover_containers(slurm_cluster.env, job_id)
