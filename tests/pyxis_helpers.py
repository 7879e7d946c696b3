"""What the real-pyxis tests share: the cluster check, NVIDIA's stand-in images, a site file.

The test cluster (tests/slurm/start.sh with HPCREPRO_RUNTIME_DIR) runs real pyxis 0.24.0 and
enroot 4.1.2; `tests/runtime/images.py` makes the images. A developer without root gets a skip
with the reason; under CI=true a missing piece fails the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "runtime"))
import images  # noqa: E402

STAND_INS = TESTS / "runtime" / "stand-ins"
RESULTS = images.SHARED / "research" / "mlperf-resnet-results"
WORKDIR = "/workspace/image_classification"
DATASET_FILES = ("train.rec", "train.idx", "val.rec", "val.idx")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true the pyxis tests must run", pytrace=False)
    pytest.skip(reason)


def require_pyxis(env: dict[str, str]) -> None:
    """Skip (fail under CI) unless srun of this cluster has pyxis' options."""
    done = subprocess.run(["srun", "--help"], env=env, capture_output=True, text=True, timeout=30)
    if "--container-image" not in done.stdout:
        unavailable(
            "the test cluster runs without pyxis: start it with HPCREPRO_RUNTIME_DIR set "
            "(bash scripts/test.sh does)"
        )


def image(builder: Any, *args: str) -> Path:
    """An image of `tests/runtime/images`, or a skip/failure naming why it cannot be made."""
    try:
        return builder(*args)
    except images.ImageBuildError as error:
        unavailable(f"test image not made: {error}")
        raise


def enroot_data(env: dict[str, str]) -> list[Path]:
    """Every node's enroot data folder of the test cluster (one per slurmd)."""
    root = Path(env["SLURM_CONF"]).parent.parent / "enroot"
    return sorted(root.glob("node*/data"))


def leftover_containers(env: dict[str, str], job_id: str) -> list[str]:
    """Container file systems a job left on any node (pyxis names them pyxis_[JOBID_]NAME)."""
    return [
        f"{folder.parent.name}:{entry.name}"
        for folder in enroot_data(env)
        for entry in folder.iterdir()
        if job_id in entry.name
    ]


def nvidia_site(
    root: Path,
    version: str,
    replay: Path,
    *,
    drop_caches: str = "true",
    **extra: Any,
) -> Path:
    """A site file that runs NVIDIA's stand-in image of `version`, replaying the result logs
    of folder `replay`; `train_imagenet.py` is the only file the mounts replace."""
    data, logs = root / "data", root / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    for name in DATASET_FILES:
        (data / name).write_bytes(b"\0" * 16)
    site = {
        "partition": "debug",
        "exclusive": False,
        "gpu_request": "none",
        "runtime": "pyxis",
        "image": str(image(images.nvidia_image, version)),
        "dataset_dir": str(data),
        "log_dir": str(logs),
        "mpi": "pmix",
        "drop_caches_command": drop_caches,  # stands in for `sudo sysctl vm.drop_caches=3`
        "nccl_test": False,  # no GPU, no nccl-tests in the stand-in images
        # the stand-in nvidia-smi names its GPUs "stand-in GPU"; the test nodes have no InfiniBand
        "preflight": {"gpu_model": "stand-in GPU", "infiniband": False},
        "submission": {"org": "hpcrepro-tests", "platform": "test_cluster"},
        "mounts": [
            {"source": str(STAND_INS / "train_imagenet.py"),
             "target": f"{WORKDIR}/train_imagenet.py", "read_only": True},
            {"source": str(TESTS), "target": "/hpcrepro-test", "read_only": True},
            {"source": str(replay), "target": "/replay", "read_only": True},
        ],
        "env": {"REPLAY_DIR": "/replay", "REPLAY_WALL": "1"},
        **extra,
    }  # fmt: skip
    path = root / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path
