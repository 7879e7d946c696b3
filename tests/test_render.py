"""Rendered sbatch scripts: golden files, shell syntax, shellcheck, and runs on the cluster.

pyxis jobs run under real pyxis and enroot (tests/test_pyxis_launch.py). Apptainer cannot be
installed here, so `tests/fakes/apptainer` is a strict stand-in: it rejects any option or syntax
the real tool would not accept, records every call, and runs the task command on the node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.config import resolve
from hpcrepro.image.reference import apptainer_image, pyxis_image
from hpcrepro.render import render_training
from script_checks import check_scripts

HERE = Path(__file__).parent
SITES = HERE / "data" / "sites"
GOLDEN = HERE / "golden"
FAKES = HERE / "fakes"

CASES = {
    "dgxa100_8x8-r3.0-pyxis": ("dgxa100_8x8", "r3.0", "pyxis.yaml"),
    "dgxh100_1x8-r4.0-pyxis": ("dgxh100_1x8", "r4.0", "pyxis.yaml"),
    "dgxa100_1x8-r2.1-apptainer": ("dgxa100_1x8", "r2.1", "apptainer.yaml"),
    "dgxh100_64x8-r3.0-apptainer": ("dgxh100_64x8", "r3.0", "apptainer.yaml"),
}


def rendered(name: str) -> str:
    """The script of a case; the host-side checker's interpreter (this Python: it has hpcrepro's
    mlperf-logging) is the one machine-dependent line, so it is named the same everywhere."""
    system, version, site = CASES[name]
    cfg = resolve(system, version, SITES / site)
    text = render_training(
        cfg, job_name=f"hpcrepro-{system}-{version}", run_indices=[1, 2, 3, 4, 5]
    )
    return text.replace(f"CHECKER_PYTHON={sys.executable}\n", "CHECKER_PYTHON=/venv/bin/python\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_golden_file(name: str) -> None:
    text = rendered(name)
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with UPDATE_GOLDEN=1 if intended ({golden})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bash_syntax_and_shellcheck(name: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sbatch"
    script.write_text(rendered(name))
    check_scripts(script)


def test_sbatch_lines_carry_site_options() -> None:
    text = rendered("dgxa100_8x8-r3.0-pyxis")
    lines = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --nodes=8" in lines and "#SBATCH --ntasks-per-node=8" in lines
    assert "#SBATCH --partition=batch" in lines and "#SBATCH --account=mlperf" in lines
    assert "#SBATCH --gpus-per-node=8" in lines and "#SBATCH --exclusive" in lines
    cfg = resolve("dgxa100_8x8", "r3.0", SITES / "pyxis.yaml")
    assert f"#SBATCH --time={cfg.time_limit_minutes(5)}" in lines
    gres = rendered("dgxa100_1x8-r2.1-apptainer")
    assert "#SBATCH --gres=gpu:8" in gres and "--exclusive" not in gres
    assert "#SBATCH --network=sharp" in rendered("dgxh100_64x8-r3.0-apptainer")


def network_lines(*overrides: str) -> list[str]:
    cfg = resolve("dgxh100_64x8", "r3.0", SITES / "apptainer.yaml", list(overrides))
    text = render_training(cfg, job_name="j", run_indices=[1])
    return [line for line in text.splitlines() if line.startswith("#SBATCH --network")]


def test_a_site_network_option_replaces_nvidias_sharp_request() -> None:
    """NVIDIA's configs ask for SHARP (SBATCH_NETWORK=sharp); a site's own --network wins, and
    `sbatch_network=null` drops it for clusters whose switch plugin refuses it."""
    assert network_lines() == ["#SBATCH --network=sharp"]
    assert network_lines("sbatch_args=[--network=def_tles=0]") == ["#SBATCH --network=def_tles=0"]
    assert network_lines("sbatch_network=null") == []


def test_ruleset_is_the_versions_own() -> None:
    assert "export MLPERF_RULESET=3.0.0" in rendered("dgxa100_8x8-r3.0-pyxis")
    assert "export MLPERF_RULESET=2.1.0" in rendered("dgxa100_1x8-r2.1-apptainer")


def test_every_catalog_export_reaches_the_script() -> None:
    cfg = resolve("dgxh100_64x8", "r3.0", SITES / "pyxis.yaml")
    text = render_training(cfg, job_name="j", run_indices=[1])
    for name in [*cfg.spec.env, *cfg.spec.hparams.exports()]:
        assert f"\nexport {name}=" in text, name


def test_image_references() -> None:
    assert pyxis_image("nvcr.io/nvidia/mxnet:23.04-py3") == "nvcr.io#nvidia/mxnet:23.04-py3"
    assert pyxis_image("nvcr.io#nvidia/mxnet:23.04-py3") == "nvcr.io#nvidia/mxnet:23.04-py3"
    assert pyxis_image("docker://ubuntu:22.04") == "ubuntu:22.04"
    assert pyxis_image("/images/rn50.sqsh") == "/images/rn50.sqsh"
    assert (
        apptainer_image("nvcr.io#nvidia/mxnet:23.04-py3")
        == "docker://nvcr.io/nvidia/mxnet:23.04-py3"
    )
    assert apptainer_image("/images/rn50.sif") == "/images/rn50.sif"


def submit_and_wait(script: str, tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    """sbatch --wait the script on the test cluster; (job id, job output)."""
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    done = subprocess.run(
        ["sbatch", "--parsable", "--wait", f"--output={tmp_path}/job-%j.out", str(path)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    job_id = done.stdout.strip().split(";")[0]
    output = tmp_path / f"job-{job_id}.out"
    text = output.read_text() if output.exists() else ""
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{text}"
    return job_id, text


def recorder(tmp_path: Path) -> str:
    """A training command that records its environment and working folder as JSON."""
    script = tmp_path / "record.py"
    script.write_text(
        "import json, os, sys\n"
        "name = 'rank%s-%s.json' % (os.environ['SLURM_PROCID'], os.environ['SEED'])\n"
        "out = os.path.join(os.environ['HPCREPRO_RUN_RECORD'], name)\n"
        "json.dump({'env': dict(os.environ), 'cwd': os.getcwd()}, open(out, 'w'))\n"
        'print(\':::MLLOG {"key": "run_stop", "value": null}\')\n'
    )
    return f"{sys.executable} {script}"


@pytest.mark.slurm
def test_apptainer_script_runs_on_the_cluster_under_the_strict_stand_in(
    slurm_cluster, tmp_path: Path
) -> None:
    """Apptainer has no Debian package here: the job runs under the real test Slurm with the
    strict `tests/fakes/apptainer` first on PATH, which checks every build and exec line."""
    records = tmp_path / "records"
    records.mkdir()
    data, logs, cache = tmp_path / "data", tmp_path / "logs", tmp_path / "cache"
    data.mkdir()
    calls = tmp_path / "calls.jsonl"
    site = tmp_path / "site.yaml"
    site.write_text(
        f"runtime: apptainer\nimage: nvcr.io/nvidia/mxnet:23.04-py3\npartition: debug\n"
        f"exclusive: false\nmpi: none\ndataset_dir: {data}\nlog_dir: {logs}\n"
        f"image_cache_dir: {cache}\ndrop_caches_command: 'true'\ncheck_compliance: false\n"
        f"workdir: {tmp_path}\nsrun_args: [--cpu-bind=none]\n"
        f"env:\n  PATH: {FAKES}:/usr/local/bin:/usr/bin:/bin\n  FAKE_SRUN_LOG: {calls}\n"
    )
    cfg = resolve(
        "dgxh100_1x8",
        "r4.0",
        site,
        [
            f"train_command={recorder(tmp_path)}",
            f"env.HPCREPRO_RUN_RECORD={records}",
            "gpus_per_node=2",
        ],
    )
    submit_and_wait(render_training(cfg, job_name="t", run_indices=[1, 2]), tmp_path,
                    slurm_cluster.env)  # fmt: skip
    run_logs = sorted(p.name for p in logs.iterdir() if p.suffix == ".log")
    assert [name.split("_")[0] for name in run_logs] == ["run-01", "run-02"]
    run_log = (logs / run_logs[0]).read_text()
    assert '"key": "cache_clear", "value": true' in run_log
    assert len(list(records.iterdir())) == 4  # 2 runs x 2 tasks
    assert len({p.name.split("-")[1] for p in records.iterdir()}) == 2  # a fresh seed per run
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    builds = [c["apptainer"] for c in recorded if c["apptainer"][0] == "build"]
    assert len(builds) == 1 and builds[0][2] == "docker://nvcr.io/nvidia/mxnet:23.04-py3"
    execs = [c["apptainer"] for c in recorded if c["apptainer"][0] == "exec"]
    assert execs and all("--nv" in e and "--pwd" in e for e in execs)


HOSTILE = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "a b  c",
    "quote'single\"double",
    "new\nline",
    "semi; touch PWNED",
    "back\\slash $HOME ${PATH}",
]


def test_hostile_values_arrive_intact_and_never_execute(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    weird = tmp_path / "data $(touch PWNED) `id`"
    weird.mkdir()
    logs = tmp_path / "logs 'x'"
    site = tmp_path / "site.yaml"
    site.write_text(
        "runtime: none\ncheck_compliance: false\ndrop_caches_command: null\n"
        f"dataset_dir: {json.dumps(str(weird))}\nlog_dir: {json.dumps(str(logs))}\n"
        "env:\n" + "".join(f"  HOSTILE_{i}: {json.dumps(v)}\n" for i, v in enumerate(HOSTILE))
    )
    cfg = resolve(
        "dgxh100_1x8",
        "r4.0",
        site,
        [
            f"train_command={recorder(tmp_path)}",
            f"env.HPCREPRO_RUN_RECORD={records}",
            "gpus_per_node=1",
        ],
    )
    script = render_training(cfg, job_name="t", run_indices=[1], launcher="local")
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("PWNED")), "a value was executed"
    (record,) = records.iterdir()
    env = json.loads(record.read_text())["env"]
    for i, value in enumerate(HOSTILE):
        assert env[f"HOSTILE_{i}"] == value
    assert env["HPCREPRO_DATA_DIR"] == str(weird)
    assert [p.name.split("_")[0] for p in logs.glob("*.log")] == ["run-01"]


def test_local_launcher_starts_one_process_per_gpu(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(
        "runtime: none\ncheck_compliance: false\ndrop_caches_command: null\n"
        f"dataset_dir: {tmp_path}\nlog_dir: {tmp_path / 'logs'}\n"
    )
    cfg = resolve(
        "l40s_2x4",
        "r4.0",
        site,
        [f"train_command={recorder(tmp_path)}", f"env.HPCREPRO_RUN_RECORD={records}", "nodes=1"],
    )
    script = render_training(cfg, job_name="t", run_indices=[1], launcher="local")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ranks = sorted(json.loads(p.read_text())["env"]["SLURM_PROCID"] for p in records.iterdir())
    assert ranks == ["0", "1", "2", "3"]


def test_campaign_log_folder_is_what_tasks_see_as_results(tmp_path: Path) -> None:
    """A campaign writes its logs below log_dir; the container's /results must be that folder,
    or the in-container compliance check would look for the logs in the wrong place."""
    cfg = resolve("dgxh100_8x8", "r4.0", SITES / "pyxis.yaml")
    campaign_logs = Path("/lustre/results/hpcrepro/my-campaign/logs")
    text = render_training(cfg, job_name="j", run_indices=[1], log_dir=campaign_logs)
    assert f"{campaign_logs}:/results" in text
    assert "/lustre/results/hpcrepro:/results" not in text
    assert f"readonly HPCREPRO_LOG_DIR={campaign_logs}" in text
