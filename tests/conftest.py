"""Shared fixtures. `slurm_cluster` is the real two-node test cluster of tests/slurm/start.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared_dir import shared_dir

SLURM_DIR = Path(os.environ.get("HPCREPRO_SLURM_DIR", "/tmp/hpcrepro-slurm"))
START_HINT = "no test Slurm cluster: run sudo tests/slurm/start.sh"


@dataclass(frozen=True)
class SlurmCluster:
    """How tests reach the cluster: pass `env` to subprocesses (it carries SLURM_CONF)."""

    env: dict[str, str]
    partition: str
    node_names: tuple[str, ...]
    conf: Path


@pytest.fixture(autouse=True, scope="session")
def _private_campaign_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Campaigns the tests make (the demo's included) must not show up in the developer's own
    `hpcrepro status`: the session registers them in an index of its own."""
    saved = os.environ.get("HPCREPRO_STATE_DIR")
    os.environ["HPCREPRO_STATE_DIR"] = str(tmp_path_factory.mktemp("hpcrepro-state"))
    yield
    if saved is None:
        os.environ.pop("HPCREPRO_STATE_DIR", None)
    else:
        os.environ["HPCREPRO_STATE_DIR"] = saved


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{START_HINT} ({reason}); under CI=true Slurm tests must run", pytrace=False)
    pytest.skip(f"{START_HINT} ({reason})")


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    conf = SLURM_DIR / "etc" / "slurm.conf"
    if shutil.which("sbatch") is None:
        _unavailable("sbatch is not installed")
    if not conf.is_file():
        _unavailable(f"{conf} does not exist")
    env = dict(os.environ, SLURM_CONF=str(conf))
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=20
        )
        nodes = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        _unavailable("slurmctld did not answer within 20 s")
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        _unavailable(f"slurmctld does not answer: {(ping.stdout + ping.stderr).strip()}")
    names = tuple(sorted({line.split()[0] for line in nodes.stdout.splitlines() if line.strip()}))
    if len(names) < 2:
        _unavailable(f"expected two nodes, sinfo shows {names}")
    return SlurmCluster(env=env, partition="debug", node_names=names, conf=conf)


# The research folder beside the checkout (NVIDIA's published code, real result logs, the enroot
# and pyxis sources). Tests read it in place and never copy it into the project.
SHARED_DIR = shared_dir()
NVIDIA_CODE = SHARED_DIR / "research" / "nvidia-resnet-code"


def require_shared(path: Path) -> Path:
    """`path` inside the shared research folder; a skip (a failure under CI=true) when it is
    missing, naming $HPCREPRO_SHARED_DIR as the way to point at it."""
    if path.exists():
        return path
    reason = f"{path} is missing (set HPCREPRO_SHARED_DIR to the folder holding research/)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true these tests must run", pytrace=False)
    pytest.skip(reason)
