"""Hostile and real-world site values against render, config show and the campaign's scripts.

pyxis and Apptainer cannot run here: their image arguments are checked against the syntax their
documentation and sources define (pyxis: a path starting with '/' or '.', else enroot's
`[USER@][REGISTRY#]IMAGE[:TAG]`, pulled with `enroot import docker://...`; apptainer: docker://,
library://, oras://, shub://, http(s):// or a file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hpcrepro
from hpcrepro.campaign import plan
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.state import Inputs
from hpcrepro.config import resolve
from hpcrepro.errors import UserError
from hpcrepro.image.reference import apptainer_image, pyxis_image
from hpcrepro.prep.slurm import PrepJob, render_prep_scripts
from hpcrepro.render import (
    container_plan,
    is_per_job_option,
    render_training,
    sbatch_options,
)
from script_checks import check_scripts


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    package_root = str(Path(hpcrepro.__file__).resolve().parents[1])  # this checkout, from any cwd
    env = dict(
        os.environ, COLUMNS="250", HPCREPRO_STATE_DIR=str(cwd / "state"), PYTHONPATH=package_root
    )
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def site_file(folder: Path, extra: str = "", name: str = "site.yaml") -> Path:
    (folder / "data").mkdir(exist_ok=True)
    path = folder / name
    path.write_text(
        f"dataset_dir: {folder / 'data'}\nlog_dir: {folder / 'logs'}\n"
        "image: nvcr.io/nvidia/mxnet:23.04-py3\n" + extra
    )
    return path


# --- config show --explain --------------------------------------------------------------------


def test_explain_prints_values_and_file_names_literally(tmp_path: Path) -> None:
    site = site_file(
        tmp_path,
        'constraint: "[rack1|rack2]"\nenv:\n  A: "[/]"\n  B: "[bold red]x"\n',
        name="site[x].yaml",
    )
    result = run_cli(
        "config", "show", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", str(site), "--explain",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for literal in ("[rack1|rack2]", "[/]", "[bold red]x", "site[x].yaml"):
        assert literal in result.stdout, literal


# --- render -d --------------------------------------------------------------------------------


def test_output_path_problems_are_exit_2_and_nothing_is_clobbered(tmp_path: Path) -> None:
    site = site_file(tmp_path)
    render = ("render", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", str(site), "-d")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert run_cli(*render, str(out), cwd=tmp_path).returncode == 0
    assert (out / "notes.txt").read_text() == "mine\n"
    assert os.access(out / "train.sbatch", os.X_OK)

    edited = (out / "train.sbatch").read_text() + "# my edit\n"
    (out / "train.sbatch").write_text(edited)
    config_before = (out / "resolved-config.yaml").stat().st_mtime_ns
    result = run_cli(*render, str(out), cwd=tmp_path)
    assert result.returncode == 2 and "differs" in result.stderr and "--force" in result.stderr
    assert (out / "train.sbatch").read_text() == edited
    assert (out / "resolved-config.yaml").stat().st_mtime_ns == config_before

    folder_there = tmp_path / "d"
    (folder_there / "train.sbatch").mkdir(parents=True)
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    for target, reason in ((folder_there, "is a folder"), (a_file, "is not a folder")):
        result = run_cli(*render, str(target), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert reason in result.stderr and str(target) in result.stderr
        assert "Traceback" not in result.stderr
    assert (folder_there / "train.sbatch").is_dir() and a_file.read_text() == "x"
    assert list(folder_there.iterdir()) == [folder_there / "train.sbatch"]


# --- images ----------------------------------------------------------------------------------


def test_pyxis_refuses_what_enroot_cannot_pull() -> None:
    for image in ("oras://ghcr.io/x/mx:1", "library://sylabs/mx:1", "shub://a/b"):
        with pytest.raises(UserError, match="apptainer"):
            pyxis_image(image)
    with pytest.raises(UserError, match="enroot import"):
        pyxis_image("dockerd://mx:1")
    with pytest.raises(UserError, match="SIF"):
        pyxis_image("/images/mx.sif")
    for bad in ("nvcr.io/nvidia/MXNet:1", "nvcr.io#nvidia#mx", "mx 1", "nvcr.io/", "-x", "mx\n"):
        with pytest.raises(UserError, match="image"):
            pyxis_image(bad)


def test_pyxis_image_syntax_is_enroots() -> None:
    assert pyxis_image("docker://nvcr.io/nvidia/mxnet:1") == "nvcr.io#nvidia/mxnet:1"
    assert pyxis_image("bob@nvcr.io/nvidia/mxnet:1") == "bob@nvcr.io#nvidia/mxnet:1"
    ngc = "$oauthtoken@nvcr.io#nvidia/mxnet:1"  # NGC's user name for API keys
    assert pyxis_image(ngc) == ngc
    assert pyxis_image("localhost:5000/mx") == "localhost:5000#mx"
    digest = "ubuntu@sha256:" + "a" * 64
    assert pyxis_image(digest) == digest
    assert pyxis_image("./mx.sqsh") == "./mx.sqsh"


def test_apptainer_gets_docker_uris_without_enroots_hash() -> None:
    assert apptainer_image("docker://nvcr.io#nvidia/mxnet:23.04-py3") == (
        "docker://nvcr.io/nvidia/mxnet:23.04-py3"
    )
    assert apptainer_image("nvcr.io/nvidia/mxnet:1") == "docker://nvcr.io/nvidia/mxnet:1"
    assert apptainer_image("ubuntu") == "docker://ubuntu"
    for uri in ("oras://ghcr.io/x/mx:1", "library://sylabs/mx:1", "docker-archive:/x.tar"):
        assert apptainer_image(uri) == uri
    with pytest.raises(UserError, match="USER@"):
        apptainer_image("bob@nvcr.io#nvidia/mx:1")
    with pytest.raises(UserError, match="ftp://"):
        apptainer_image("ftp://x/y")


def test_image_files_are_never_registry_references(tmp_path: Path) -> None:
    site = site_file(tmp_path)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        for runtime, name in (("apptainer", "images/mx.sif"), ("pyxis", "images/mx.sqsh")):
            cfg = resolve("dgxa100_8x8", "r3.0", site, [f"image={name}", f"runtime={runtime}"])
            container = container_plan(cfg, tmp_path / "logs")
            assert container.image == str(tmp_path / name)
            assert container.build_sif == ""
            assert "docker://" not in render_training(cfg, job_name="j", run_indices=[1])
    finally:
        os.chdir(cwd)


# --- sbatch options ----------------------------------------------------------------------------


SITE_ARGS = [
    "--gres=gpu:a100:8", "--time=1-12:00:00", "-t10", "--time-m=5", "--mem=0", "-N2",
    "--exclusive", "--gpus-per-node=8", "--nodelist=n[1-8]", "--ntasks=64",
    "--mail-type=END", "--mail-user=a@b.c", "--comment=mlperf", "--licenses=fs:1",
    "--exclude=bad1", "--hold",
]  # fmt: skip
SCHEDULING = ["--mail-type=END", "--mail-user=a@b.c", "--comment=mlperf", "--licenses=fs:1",
              "--exclude=bad1", "--hold"]  # fmt: skip


def test_helper_stages_get_scheduling_options_but_keep_their_own_resources(
    tmp_path: Path,
) -> None:
    site = site_file(tmp_path, "partition: gpu\naccount: ml\nqos: high\nexclusive: false\n")
    args = ",".join(f'"{a}"' for a in SITE_ARGS)
    cfg = resolve("dgxa100_8x8", "r3.0", site, [f"sbatch_args=[{args}]"])
    common = dict(job_name="j", nodes=1, ntasks_per_node=1, time_minutes=30, output="/o/x-%j")
    helper = sbatch_options(cfg, **common, gpus=False)  # type: ignore[arg-type]
    assert helper[:5] == ["--job-name=j", "--nodes=1", "--ntasks-per-node=1", "--time=30",
                          "--output=/o/x-%j"]  # fmt: skip
    assert helper[5:8] == ["--partition=gpu", "--account=ml", "--qos=high"]
    assert helper[-len(SCHEDULING) :] == SCHEDULING
    assert not any(is_per_job_option(option) for option in helper[5:])
    training = sbatch_options(cfg, **common, gpus=True)  # type: ignore[arg-type]
    assert training[-len(SITE_ARGS) :] == SITE_ARGS
    for chain_breaker in ("--wait", "-W", "--dependency=afterok:1", "--array=0-3", "--parsable"):
        cfg = resolve("dgxa100_8x8", "r3.0", site, [f'sbatch_args=["{chain_breaker}"]'])
        with pytest.raises(UserError, match="sbatch_args"):
            sbatch_options(cfg, **common, gpus=True)  # type: ignore[arg-type]


def test_percent_in_folders_is_literal_where_sbatch_expands_patterns(tmp_path: Path) -> None:
    logs = tmp_path / "50%N" / "logs"
    cfg = resolve("dgxa100_8x8", "r3.0", site_file(tmp_path), [f"log_dir={logs}"])
    text = render_training(cfg, job_name="j", run_indices=[1])
    escaped = str(logs).replace("%", "%%")
    assert f"#SBATCH --output={escaped}/j-%j.out\n" in text
    assert f"readonly HPCREPRO_LOG_DIR={logs}\n" in text  # a shell value: no sbatch pattern
    prep = render_prep_scripts(PrepJob(raw="/raw", out="/out", log_dir=str(logs)))
    assert f"#SBATCH --output={escaped}/prep-pack-%A_%a.out\n" in prep.pack
    assert f"#SBATCH --output={escaped}/prep-join-%j.out\n" in prep.join


# --- shellcheck of every template with literal '$', '`' and '~' ------------------------------

HOSTILE_ENV = (
    'env:\n  LD_LIBRARY_PATH: "/opt/nccl/lib:$LD_LIBRARY_PATH"\n  T: "`id`"\n  H: "~/x"\n'
    '  NCCL_IB_HCA: "=mlx5_0:1,mlx5_1:1"\n'
)


@pytest.mark.parametrize(
    "extra",
    [
        "runtime: none\n",
        "runtime: none\ncheck_compliance: false\n",
        "runtime: none\nworkload: reference\n",
        "runtime: pyxis\ncheck_compliance: false\n",
        "runtime: apptainer\ncheck_compliance: false\n",
        "runtime: apptainer\n",
    ],
)
def test_every_stage_script_is_shellcheck_clean(extra: str, tmp_path: Path) -> None:
    weird = tmp_path / "$HOME `x` ~"
    weird.mkdir()
    site = site_file(weird, extra + HOSTILE_ENV + f"imagenet_dir: {weird / 'raw'}\n")
    cfg = resolve("dgxa100_8x8", "r3.0", site)
    paths = CampaignPaths(weird / "campaign $x")
    inputs = Inputs(system="dgxa100_8x8", version="r3.0")
    manifest = plan.build(cfg, paths, "c", 2, 1, "slurm", inputs, prep=True)
    scripts = [paths.root / stage.script for stage in manifest.stages]
    assert {"prep", "collect"} <= {stage.kind for stage in manifest.stages}
    prep = render_prep_scripts(PrepJob(raw="/r$x", out="/o`x`", log_dir=str(weird)))
    pack, join = weird / "prep-pack.sbatch", weird / "prep-join.sbatch"
    pack.write_text(prep.pack)
    join.write_text(prep.join)
    check_scripts(*scripts, pack, join)


def test_values_that_would_break_a_line_or_a_bind_list_are_refused(tmp_path: Path) -> None:
    site = site_file(tmp_path, 'env:\n  NCCL_IB_HCA: "=mlx5_0:1"\n')
    text = render_training(resolve("dgxa100_8x8", "r3.0", site), job_name="j", run_indices=[1])
    assert "\nexport NCCL_IB_HCA='=mlx5_0:1'\n" in text  # not NAME==..., which reads as a typo
    for runtime in ("pyxis", "apptainer"):
        mapped = site_file(
            tmp_path, f"runtime: {runtime}\nmounts:\n  - {{source: /a, target: '/b,/etc:/x'}}\n"
        )
        with pytest.raises(UserError, match="mounts"):
            render_training(resolve("dgxa100_8x8", "r3.0", mapped), job_name="j", run_indices=[1])
    newline_name = site_file(tmp_path, 'env:\n  "A\\n": x\n')
    with pytest.raises(UserError, match="not a valid environment variable name"):
        render_training(resolve("dgxa100_8x8", "r3.0", newline_name), job_name="j", run_indices=[1])


# --- values that must never execute (issue 13) ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DGXNGPU", "RUN_TOTAL[$(id>>/tmp/x)]", "sizes or hyperparameters"),
        ("BATCHSIZE", "1", "sizes or hyperparameters"),
        ("LR", "99", "sizes or hyperparameters"),
        ("NUMEPOCHS", "1", "sizes or hyperparameters"),
        ("DALI_THREADS", "2", "system's own config"),
        ("MLPERF_RULESET", "1.0.0", "job script itself"),
        ("NCCL_TEST", "0", "job script itself"),
        ("SLURM_MPI_TYPE", "none", "job script itself"),
        ("MLPERF_SUBMISSION_ORG", "x", "job script itself"),
        ("SLURM_JOB_NUM_NODES", "$(id)", "belongs to Slurm"),
        ("SEED", "$(id)", "whole number"),
    ],
)
def test_site_env_cannot_set_what_the_catalog_or_the_launch_sets(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    site = site_file(tmp_path, f"env:\n  {name}: {value!r}\n")
    with pytest.raises(UserError, match=message) as caught:
        resolve("dgxh100_8x8", "r4.0", site)
    assert f"{site}:" in caught.value.where and name in caught.value.where


def test_the_systems_own_values_change_only_where_config_show_sees_them(tmp_path: Path) -> None:
    site = site_file(tmp_path, "env:\n  SEED: '42'\n  NCCL_DEBUG: INFO\n")
    cfg = resolve("dgxh100_8x8", "r4.0", site, ["system.env.DALI_THREADS=2", "hparams.LR=10.5"])
    text = render_training(cfg, job_name="j", run_indices=[1])
    assert "export DALI_THREADS=2\n" in text and "export LR=10.5\n" in text
    assert cfg.origin_of("spec.env.DALI_THREADS").startswith("--set")
    assert "export SEED=42\n" in text and "export NCCL_DEBUG=INFO\n" in text


def test_step_sizes_are_literals_not_arithmetic_on_exported_text() -> None:
    cfg = resolve("dgxh100_8x8", "r4.0", Path(__file__).parent / "data" / "sites" / "pyxis.yaml")
    text = render_training(cfg, job_name="j", run_indices=[1])
    assert "readonly JOB_NODES=8\nreadonly TASKS_PER_NODE=8\nreadonly TOTAL_TASKS=64\n" in text
    for line in text.splitlines():  # no shell arithmetic reads an exported variable
        for expression in line.split("$((")[1:]:
            assert not any(name in expression for name in ("DGX", "SLURM_", "BATCHSIZE")), line


@pytest.mark.parametrize(
    "entry",
    ["--dep=afterok:1", "--arr=0-9", "--wr=id", "--pars", "-dafterok:1", "-vW", "--te",
     "--export=ALL", "--req", "--container-image=x", "bash", "--gres", "--w"],
)  # fmt: skip
def test_sbatch_options_are_read_as_sbatchs_getopt_reads_them(tmp_path: Path, entry: str) -> None:
    with pytest.raises(UserError, match="sbatch_args"):  # the site file or the render refuses
        cfg = resolve("dgxa100_8x8", "r3.0", site_file(tmp_path), [f'sbatch_args=["{entry}"]'])
        render_training(cfg, job_name="j", run_indices=[1])


@pytest.mark.parametrize(
    "entries",
    [["bash", "-c", "id > /tmp/x", "x"], ["--cpu-bind"], ["-n4"], ["--nod=2"], ["--mpi=none"],
     ["--container-mounts=/a:/b"], ["--"], ["-lN2"], ["--pty"]],
)  # fmt: skip
def test_srun_args_must_be_whole_options_hpcrepro_leaves_to_the_site(
    tmp_path: Path, entries: list[str]
) -> None:
    listed = ",".join(f'"{e}"' for e in entries)
    cfg = resolve("dgxa100_8x8", "r3.0", site_file(tmp_path), [f"srun_args=[{listed}]"])
    with pytest.raises(UserError, match="srun_args entry"):
        render_training(cfg, job_name="j", run_indices=[1])


def test_whole_options_stay_allowed(tmp_path: Path) -> None:
    cfg = resolve("dgxa100_8x8", "r3.0", site_file(tmp_path), ['sbatch_args=["-C"]'])
    with pytest.raises(UserError, match="constraint needs a value"):  # attached, as -Cgpu
        render_training(cfg, job_name="j", run_indices=[1])
    cfg = resolve("dgxa100_8x8", "r3.0", site_file(tmp_path), [
        'srun_args=["--cpu-bind=none", "-l", "--gpu-bind=closest"]',
        'sbatch_args=["--wait-all-nodes=1", "--mem=0", "-Cgpu", "--time-m=30"]',
    ])  # fmt: skip
    text = render_training(cfg, job_name="j", run_indices=[1])
    assert "#SBATCH --wait-all-nodes=1\n#SBATCH --mem=0\n#SBATCH -Cgpu\n#SBATCH --time-m=30" in text
    assert "readonly SRUN_ARGS=(--cpu-bind=none -l --gpu-bind=closest)" in text
