"""The sharded prep on Slurm: its two job scripts (quoting, shellcheck, #SBATCH lines) and a real
sharded prep on the test cluster, submitted through the Slurm backend."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcrepro.errors import UserError
from hpcrepro.prep import slurm as prep_slurm
from hpcrepro.prep.slurm import PrepJob, render_prep_scripts
from hpcrepro.scheduler import states
from hpcrepro.scheduler.slurm import Slurm
from prep_data import make_imagenet
from script_checks import check_scripts

SRC = Path(__file__).resolve().parent.parent / "src"
NASTY = "/data/it's a $(touch /tmp/pwned) `x` dir"


def test_scripts_quote_everything_and_pass_shellcheck(tmp_path: Path) -> None:
    options = ("--partition=a b", "--account=$HOME")
    job = PrepJob(raw=NASTY, out=NASTY + "/out", log_dir="/logs", shards=8, workers=16,
                  val_labels="/x/valprep.sh", sbatch_options=options)  # fmt: skip
    scripts = render_prep_scripts(job)
    for text in (scripts.pack, scripts.join):
        assert "--raw '/data/it'\"'\"'s a $(touch /tmp/pwned) `x` dir'" in text
        # sbatch reads #SBATCH lines itself (no shell): a value with a space is double-quoted
        assert '#SBATCH --partition="a b"\n' in text and "#SBATCH --account=$HOME\n" in text
    pack = scripts.pack.splitlines()
    assert "#SBATCH --array=0-7" in pack and "#SBATCH --cpus-per-task=16" in pack
    assert "#SBATCH --output=/logs/prep-pack-%A_%a.out" in pack
    assert "#SBATCH --output=/logs/prep-join-%j.out" in scripts.join.splitlines()
    assert "--array" not in scripts.join and "--join" in scripts.join
    paths = [tmp_path / "pack.sbatch", tmp_path / "join.sbatch"]
    paths[0].write_text(scripts.pack)
    paths[1].write_text(scripts.join)
    check_scripts(*paths)


@pytest.mark.parametrize("field", ["raw", "out", "log_dir"])
def test_line_breaks_are_refused(field: str) -> None:
    values = {"raw": "/r", "out": "/o", "log_dir": "/l", field: "/a\nHPCREPRO_PACK\nrm -rf /"}
    with pytest.raises(UserError, match="line break"):
        render_prep_scripts(PrepJob(**values))


@pytest.mark.parametrize("option", ["--dependency=afterok:1", "--array=0-3", "--wait"])
def test_options_that_break_the_chain_are_refused(option: str) -> None:
    with pytest.raises(UserError, match="cannot be a site-wide sbatch option"):
        render_prep_scripts(PrepJob(raw="/r", out="/o", log_dir="/l", sbatch_options=(option,)))


def test_dry_run_is_the_two_sbatch_lines(tmp_path: Path) -> None:
    job = PrepJob(raw="/r", out="/o", log_dir=str(tmp_path / "logs"), shards=2)
    lines = Slurm().dry_run(prep_slurm.write_jobs(job, tmp_path / "jobs"))
    assert lines == [
        f"job_prep_pack=$(sbatch --parsable --job-name=hpcrepro-prep-pack "
        f"{tmp_path}/jobs/prep-pack.sbatch)",
        f'job_prep_join=$(sbatch --parsable --job-name=hpcrepro-prep-join '
        f'"--dependency=afterok:$job_prep_pack" --kill-on-invalid-dep=yes '
        f"{tmp_path}/jobs/prep-join.sbatch)",
    ]


@pytest.mark.slurm
def test_a_sharded_prep_runs_on_slurm(tmp_path: Path, slurm_cluster, monkeypatch) -> None:
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(SRC))  # sbatch passes the environment to the jobs
    data = make_imagenet(tmp_path / "raw", classes=3, train_per_class=4, val_per_class=2)
    out = tmp_path / "out dir"
    job = PrepJob(raw=str(data.tars), out=str(out), log_dir=str(tmp_path / "logs"), shards=3,
                  workers=2, command=(sys.executable, "-m", "hpcrepro"),
                  sbatch_options=("--partition=debug",))  # fmt: skip
    backend = Slurm()
    array_id, join_id = prep_slurm.submit(prep_slurm.write_jobs(job, tmp_path / "jobs"), backend)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        info = backend.poll([join_id]).infos.get(join_id)
        if info is not None and states.is_finished(info.state):
            break
        time.sleep(1)
    else:
        backend.cancel([array_id, join_id])
        pytest.fail("the prep jobs did not end within 240 s")
    logs = "\n".join(path.read_text() for path in sorted((tmp_path / "logs").glob("*.out")))
    assert info.state == states.COMPLETED, logs
    assert len(list((tmp_path / "logs").glob("prep-pack-*_*.out"))) == 3  # one per array task
    verify = subprocess.run([sys.executable, "-m", "hpcrepro", "prep", "verify", str(out)],
                            capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert "train: 12 records of 12 listed, 3 classes" in verify.stdout
