"""The detection job's Slurm options: from the site file (checked by the site model) to the
#SBATCH lines of its script (written by render.job_options, as every hpcrepro job's are)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcrepro.detect.jobs import JobOptions, check_job_folder, job_options_from_site, job_script
from hpcrepro.errors import UserError
from script_checks import check_scripts

FULL_SITE = """\
partition: gpu
account: proj1
qos: high
reservation: mlperf
constraint: a100&ib
exclusive: false
gpu_request: gres
runtime: pyxis
image: nvcr.io/nvidia/mxnet:23.04-py3
dataset_dir: /data/imagenet
log_dir: /scratch/logs
mounts: [/scratch:/scratch]
sbatch_args: [--mail-type=END, --mem=0]
"""


def _sbatch_lines(options: JobOptions, nodes: int, folder: Path) -> list[str]:
    script = folder / "detect.sbatch"
    script.write_text(job_script(nodes, options, folder))
    check_scripts(script)
    return [line for line in script.read_text().splitlines() if line.startswith("#SBATCH")]


def test_full_site_file_gives_its_slurm_keys(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(FULL_SITE)
    options = job_options_from_site(site, gpus_per_node=8, timeout_min=7)
    lines = _sbatch_lines(options, 4, tmp_path)
    for expected in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --time=7",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1",
        "#SBATCH --qos=high",
        "#SBATCH --reservation=mlperf",
        "#SBATCH --constraint=a100&ib",
        "#SBATCH --gres=gpu:8",
        "#SBATCH --job-name=hpcrepro-detect",
        f"#SBATCH --output={tmp_path}/detect-%j.out",
        "#SBATCH --mail-type=END",  # the site's scheduling options reach it
    ):
        assert expected in lines
    assert not any("exclusive" in line or "gpus-per-node" in line for line in lines)
    # a per-job resource option of the site is for the training jobs, as for every helper job
    assert "#SBATCH --mem=0" not in lines and "--no-requeue" not in "\n".join(lines)


def test_defaults_ask_for_whole_nodes(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("gpu_request: gpus-per-node\n")
    lines = _sbatch_lines(job_options_from_site(site, 4, 10), 2, tmp_path)
    assert "#SBATCH --exclusive" in lines and "#SBATCH --gpus-per-node=4" in lines
    assert not any("partition" in line or "gres" in line for line in lines)


def test_site_errors_name_file_line_and_key(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("dataset_dir: /data\npartition: 'gpu part'\n")
    with pytest.raises(UserError) as caught:
        job_options_from_site(site, None, 10)
    assert caught.value.where == f"{site}:2 key 'partition'"
    assert "cannot go into an '#SBATCH' line" in caught.value.message
    site.write_text("- a list\n")
    with pytest.raises(UserError, match="must be a mapping"):
        job_options_from_site(site, None, 10)


@pytest.mark.parametrize("folder", ["/tmp/a b/jobs", "/shared/detect"])
def test_plain_job_folders_pass(folder: str) -> None:
    assert check_job_folder(Path(folder)) == Path(folder)
