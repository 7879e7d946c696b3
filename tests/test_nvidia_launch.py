"""Every launch profile of hpcrepro.nvidia_launch against the real run.sub (a30.sub) it mirrors,
read in place from the shared research folder, and the rendered job against its profile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import NVIDIA_CODE, require_shared
from hpcrepro.catalog import load_catalog
from hpcrepro.config import resolve
from hpcrepro.nvidia_launch import A30_PROFILES, PROFILES, LaunchProfile, profile_for
from hpcrepro.render import render_training
from hpcrepro.shell import quote

SITES = Path(__file__).parent / "data" / "sites"


def folder(version: str, implementation: str) -> Path:
    return require_shared(NVIDIA_CODE / f"v{version.removeprefix('r')}" / "NVIDIA" / implementation)


def squeezed(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def check(profile: LaunchProfile, text: str, name: str) -> None:
    flat = squeezed(text)
    assert squeezed(f'python -c "{profile.submission_log}"') in flat, name
    assert squeezed(f'python -c "{profile.cache_clear_log}"') in flat, name
    dlpal = next(line for line in text.splitlines() if ":::DLPAL" in line)
    assert ("MLPERF_CLUSTER_NAME" in dlpal) == profile.dlpal_cluster_system, name
    assert (":::SYSJSON" in text) == profile.sysjson, name
    assert ("ibv_devinfo --list" in text and "topo -m" in text) == profile.diagnostics, name
    assert profile.run_script in text, name


@pytest.mark.parametrize(("version", "implementation"), sorted(PROFILES))
def test_each_profile_is_what_its_run_sub_does(version: str, implementation: str) -> None:
    profile = PROFILES[(version, implementation)]
    text = (folder(version, implementation) / profile.script).read_text()
    check(profile, text, f"{version} {implementation}")
    default = re.search(r"NCCL_TEST=\$\{NCCL_TEST:-(\d)\}", text)
    assert default and (default[1] == "1") == profile.nccl_test


@pytest.mark.parametrize(("version", "implementation"), sorted(A30_PROFILES))
def test_the_a30_profile_is_a30_sub(version: str, implementation: str) -> None:
    profile = A30_PROFILES[(version, implementation)]
    code = folder(version, implementation)
    text = (code / "a30.sub").read_text()
    check(profile, text, "a30.sub")
    assert "NCCL" not in text and (code / profile.run_script).is_file()


def test_every_implementation_folder_has_a_profile() -> None:
    root = require_shared(NVIDIA_CODE)
    with_code = {
        (f"r{path.parts[-4][1:]}", path.parent.name)
        for path in root.glob("v*/NVIDIA/*/run.sub")
    }
    assert with_code == set(PROFILES)
    for entry in load_catalog().systems.values():
        for version, spec in entry.versions.items():
            assert (version, spec.implementation) in PROFILES, (entry.system, version)


@pytest.mark.parametrize(
    ("system", "version"), [("dgxa100_1x8", "r2.1"), ("dgxh100_8x8", "r3.0"),
                            ("dgxh100_8x8", "r3.1"), ("h200_1x8", "r4.0"), ("a30_1x2", "r2.1")]
)  # fmt: skip
def test_the_rendered_job_logs_through_its_rounds_api(system: str, version: str) -> None:
    cfg = resolve(system, version, SITES / "pyxis.yaml", ["nccl_test=null"])
    spec = cfg.spec
    profile = profile_for(version, spec.implementation, spec.dgxsystem)
    text = render_training(cfg, job_name="j", run_indices=[1])
    assert f"python -c {quote(profile.submission_log)}" in text
    assert f"python -c {quote(profile.cache_clear_log)}" in text
    assert ("echo \":::SYSJSON" in text) == profile.sysjson
    assert ("${MLPERF_CLUSTER_NAME:-} ${DGXSYSTEM}" in text) == profile.dlpal_cluster_system
    assert ("export NCCL_TEST=1\n" in text) == profile.nccl_test
    assert f"readonly TRAIN_COMMAND=({profile.run_script})" in text
    assert "|| true" not in text.split("run_experiment()")[1].split("\n}\n")[0]
