"""The prep job-array script: quoting, shellcheck, and its job scripts doing a real sharded prep.

`sbatch` is replaced by a recorder (submission itself needs a cluster); the job scripts it
receives are then run with bash exactly as Slurm would, array task by array task, then the join.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.errors import UserError
from hpcrepro.prep.slurm import PrepJob, render_prep_script
from prep_data import make_imagenet
from script_checks import check_scripts

SRC = Path(__file__).resolve().parent.parent / "src"
NASTY = "/data/it's a $(touch /tmp/pwned) `x` dir"

RECORDER = """#!/bin/bash
# Stand-in for sbatch: keeps the arguments and the job script, answers with a job id.
n=$(( $(ls "$SBATCH_LOG" | wc -l) / 2 + 1 ))
printf '%s\\n' "$@" > "$SBATCH_LOG/job$n.args"
cat > "$SBATCH_LOG/job$n.sh"
echo "$((1000 + n));cluster"
"""


def test_script_quotes_everything_and_passes_shellcheck(tmp_path: Path) -> None:
    options = ("--partition=a b", "--account=$HOME")
    job = PrepJob(raw=NASTY, out=NASTY + "/out", log_dir=NASTY + "/logs", shards=8, workers=16,
                  val_labels="/x/valprep.sh", sbatch_options=options)  # fmt: skip
    script = render_prep_script(job)
    assert "--raw '/data/it'\"'\"'s a $(touch /tmp/pwned) `x` dir'" in script
    assert "'--account=$HOME'" in script and "--array=0-7" in script
    path = tmp_path / "prep.sh"
    path.write_text(script)
    check_scripts(path)


@pytest.mark.parametrize("field", ["raw", "out", "log_dir"])
def test_line_breaks_are_refused(field: str) -> None:
    values = {"raw": "/r", "out": "/o", "log_dir": "/l", field: "/a\nHPCREPRO_PACK\nrm -rf /"}
    with pytest.raises(UserError, match="line break"):
        render_prep_script(PrepJob(**values))


def test_rendered_jobs_run_a_sharded_prep(tmp_path: Path) -> None:
    data = make_imagenet(tmp_path / "raw", classes=3, train_per_class=4, val_per_class=2)
    out = tmp_path / "out dir"
    job = PrepJob(raw=str(data.tars), out=str(out), log_dir=str(tmp_path / "logs"), shards=3,
                  workers=2, command=(sys.executable, "-m", "hpcrepro"))  # fmt: skip
    (tmp_path / "prep.sh").write_text(render_prep_script(job))
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch-log"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(RECORDER)
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SBATCH_LOG": str(log), "PYTHONPATH": str(SRC)}  # fmt: skip
    result = subprocess.run(["bash", str(tmp_path / "prep.sh")], env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert result.stdout == "1002\n"  # the join job's id, for chaining later stages
    pack_args = (log / "job1.args").read_text().splitlines()
    assert "--array=0-2" in pack_args and "--cpus-per-task=2" in pack_args
    assert "--dependency=afterok:1001" in (log / "job2.args").read_text().splitlines()
    for task in range(3):
        task_env = {**env, "SLURM_ARRAY_TASK_ID": str(task)}
        subprocess.run(["bash", str(log / "job1.sh")], env=task_env, check=True,
                       capture_output=True)  # fmt: skip
    assert not (out / "manifest.json").exists()
    subprocess.run(["bash", str(log / "job2.sh")], env=env, check=True, capture_output=True)
    assert (out / "manifest.json").is_file()
    verify = subprocess.run([sys.executable, "-m", "hpcrepro", "prep", "verify", str(out)],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert "train: 12 records of 12 listed, 3 classes" in verify.stdout
