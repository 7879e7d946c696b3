"""`hpcrepro render` with no site file: placeholder scripts for review, marked as such; `submit`
still needs a site. And what the preflight settings render to (tests/test_preflight_pyxis.py runs
them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.config import resolve
from hpcrepro.errors import UserError
from hpcrepro.render import render_training
from script_checks import check_scripts

SITES = Path(__file__).parent / "data" / "sites"


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HPCREPRO_SITE"}
    env["HOME"] = str(home)  # no ~/.config/hpcrepro/site.yaml
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=60,
    )


def test_render_without_a_site_writes_marked_placeholder_scripts(tmp_path: Path) -> None:
    done = cli(
        "render", "--system", "dgxa100_8x8", "--version", "r3.0", "-d", "review", home=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "warning: no site file: dataset_dir, log_dir are placeholder paths" in done.stderr
    assert "hpcrepro site init" in done.stderr
    script = (tmp_path / "review" / "train.sbatch").read_text().splitlines()
    assert script[0] == "#!/bin/bash"
    assert script[1].startswith("# PLACEHOLDER SCRIPT, NOT SUBMITTABLE: rendered without a site")
    assert "readonly HPCREPRO_LOG_DIR=/PLACEHOLDER/set-log_dir-in-site.yaml" in script
    assert any(line.startswith("#SBATCH --output=/PLACEHOLDER/") for line in script)
    config = (tmp_path / "review" / "resolved-config.yaml").read_text()
    assert config.startswith("# PLACEHOLDER SCRIPT, NOT SUBMITTABLE")
    check_scripts(tmp_path / "review" / "train.sbatch")  # still a valid script to read


def test_a_set_folder_is_used_and_only_the_other_is_a_placeholder(tmp_path: Path) -> None:
    done = cli(
        "render",
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "-d",
        "review",
        "--set",
        f"log_dir={tmp_path}/logs",
        home=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "dataset_dir are placeholder paths" in done.stderr
    script = (tmp_path / "review" / "train.sbatch").read_text()
    assert "/PLACEHOLDER/ paths (dataset_dir)" in script
    assert f"readonly HPCREPRO_LOG_DIR={tmp_path}/logs" in script


def test_submit_still_needs_a_site(tmp_path: Path) -> None:
    done = cli("submit", "--system", "dgxa100_8x8", "--version", "r3.0", home=tmp_path)
    assert done.returncode == 2
    assert "no site configuration" in done.stderr and "hpcrepro site init" in done.stderr


def test_with_a_site_there_is_no_banner(tmp_path: Path) -> None:
    done = cli(
        "render",
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "-d",
        "r",
        "--site",
        str(SITES / "pyxis.yaml"),
        home=tmp_path,
    )
    assert done.returncode == 0 and "PLACEHOLDER" not in (tmp_path / "r/train.sbatch").read_text()


def test_preflight_settings_in_the_script() -> None:
    site = SITES / "pyxis.yaml"
    auto = render_training(resolve("dgxa100_8x8", "r3.0", site), job_name="j", run_indices=[1])
    assert "readonly PREFLIGHT_GPU_MODEL=A100" in auto  # the catalog's A100-SXM4-80GB
    assert "/sys/class/infiniband/*/ports/*/state" in auto  # 8 nodes: InfiniBand is checked
    assert "MIN_BUSBW_GBPS" not in auto
    one = render_training(resolve("dgxh100_1x8", "r4.0", site), job_name="j", run_indices=[1])
    assert "PREFLIGHT_GPU_MODEL=H100" in one and "/sys/class/infiniband" not in one
    cfg = resolve("dgxa100_1x8", "r2.1", site, ["preflight.min_busbw_gbps=150.5"])
    script = render_training(cfg, job_name="j", run_indices=[1])  # r2.1: the threshold runs it
    assert "readonly MIN_BUSBW_GBPS=150.5" in script and "all_reduce_perf_mpi" in script
    own = resolve("dgxa100_8x8", "r3.0", site, ["train_command=/bin/true"])
    assert "PREFLIGHT_GPU_MODEL" not in render_training(own, job_name="j", run_indices=[1])
    off = resolve("dgxa100_8x8", "r3.0", site, ["nccl_test=false", "preflight.min_busbw_gbps=10"])
    with pytest.raises(UserError, match="min_busbw_gbps needs the NCCL test"):
        render_training(off, job_name="j", run_indices=[1])
    local = render_training(
        resolve("dgxa100_8x8", "r3.0", site), job_name="j", run_indices=[1], launcher="local"
    )
    assert "preflight_fail" not in local  # the local backend has no nodes to check


def test_an_unknown_preflight_key_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(f"dataset_dir: {tmp_path}\nlog_dir: {tmp_path}\npreflight:\n  gpu: false\n")
    with pytest.raises(UserError) as error:
        resolve("dgxa100_8x8", "r3.0", site)
    assert "preflight.gpu" in error.value.render() and "gpus" in error.value.render()
