#!/usr/bin/env python3
"""Write the per-file SHA-256 manifests of NVIDIA's published ResNet code that hpcrepro ships.

    python3 scripts/image-code-manifests.py [SHARED_DIR]

Reads the byte-for-byte copies in SHARED_DIR/research/nvidia-resnet-code/ (default: ../shared
beside the checkout, or $HPCREPRO_SHARED_DIR) and writes one JSON file per MLPerf round, plus one
for the mlperf-common snapshots, into src/hpcrepro/image/published/. `hpcrepro image build`
checks a code tree against them, so a wrong or edited tree is refused with the file named. Run it
again only when a new round or snapshot is added; the output is deterministic.

The mlperf-common commit of each implementation is a decision recorded here (PINS), with why.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "hpcrepro" / "image" / "published"

sys.path.insert(0, str(ROOT / "src"))
from hpcrepro.rounds import ROUNDS  # noqa: E402  (the repository and commit of each round)

IMPLEMENTATIONS = "benchmarks/resnet/implementations"

# NVIDIA/mlperf-common commits (full hashes of the short ones the shared README names).
COMMON_V30 = (
    "53b6de596bd2856665d2976f98341cfc3e95ce96"  # 2023-04-26: first with MPICommunicationHandler
)
COMMON_V31 = "aa76b428ccccd810e708da59ab23d5d5ff602297"  # 2023-10-20: the v3.1 build time
COMMON_V40 = "68cf1d0d5e3de3351e66abb696d0e2d011aabf47"  # 2024-04-19: pinned by v4.0's requirements
COMMON_V21 = (
    "dfb561fbc7c24faec6d372c257ffe1cea317e2a5"  # 2022-10-04: last commit before v2.1's deadline
)
COMMON_SNAPSHOTS = {"53b6de5": COMMON_V30, "aa76b42": COMMON_V31, "68cf1d0": COMMON_V40}

# (round, implementation folder) -> (commit, why). Only folders whose requirements.txt names
# mlperf-common without a commit need a pin; v4.0's own pin is kept as it is.
PINS = {
    ("v2.1", "mxnet-preview"): (
        COMMON_V21,
        "requirements.txt names mlperf-common without a commit and the v2.1 code never imports "
        "it; pinned to the last commit before the v2.1 submission deadline (no snapshot in the "
        "shared folder, so a source folder of it cannot be checked file by file)",
    ),
    ("v3.0", "mxnet"): (
        COMMON_V30,
        "the first commit with the MXNet MPICommunicationHandler that mlperf_log_utils.py imports",
    ),
    ("v3.1", "mxnet"): (COMMON_V31, "the mlperf-common commit of the v3.1 build time"),
    ("v4.0", "coreweave_hgxh100_n448_ngc23.04_mxnet"): (
        COMMON_V30,
        "this folder is the v3.0 code on the 23.04 base (same mlperf_log_utils.py, unpinned "
        "requirement); pinned like v3.0",
    ),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree(folder: Path) -> dict[str, dict[str, object]]:
    """Relative path -> {sha256, executable} of every file below `folder` (no links expected)."""
    files: dict[str, dict[str, object]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise SystemExit(f"{path} is a symbolic link: the manifests hold regular files only")
        if path.is_file():
            entry: dict[str, object] = {"sha256": sha256(path)}
            if os.access(path, os.X_OK):
                entry["executable"] = True
            files[path.relative_to(folder).as_posix()] = entry
    return files


def pin_for(version: str, name: str, folder: Path) -> dict[str, str] | None:
    requirements = folder / "requirements.txt"
    if not requirements.is_file():
        return None
    lines = requirements.read_text().splitlines()
    common = [line for line in lines if "NVIDIA/mlperf-common" in line]
    if not common:
        return None
    pinned = common[0].partition(".git@")[2].strip()
    if pinned:
        return {"commit": pinned, "why": "pinned by NVIDIA's own requirements.txt"}
    commit, why = PINS[(version, name)]
    return {"commit": commit, "why": why}


def main() -> None:
    shared = Path(
        sys.argv[1]
        if len(sys.argv) > 1
        else os.environ.get("HPCREPRO_SHARED_DIR") or ROOT.parent / "shared"
    )
    code = shared / "research" / "nvidia-resnet-code"
    if not code.is_dir():
        raise SystemExit(f"{code} is missing: give the folder holding research/ as argument")
    OUT.mkdir(parents=True, exist_ok=True)
    for item in ROUNDS.values():
        version, repository = item.results_round, item.results_repository
        commit = item.results_commit
        implementations = {}
        for folder in sorted(p for p in (code / version).glob("*/*") if p.is_dir()):
            submitter, name = folder.parent.name, folder.name
            entry: dict[str, object] = {"files": tree(folder)}
            pin = pin_for(version, name, folder)
            if pin:
                entry["mlperf_common"] = pin
            implementations[f"{submitter}/{IMPLEMENTATIONS}/{name}"] = entry
        data = {
            "round": version,
            "repository": repository,
            "commit": commit,
            "note": "SHA-256 of every file NVIDIA published in each implementation folder, "
            "written by scripts/image-code-manifests.py; prebuilt binaries "
            "(cuda_graphs/graph_lib.so) were not in the copies hashed",
            "implementations": implementations,
        }
        write(OUT / f"{version}.json", data)
    snapshots = {
        full: {"files": tree(code / "mlperf-common" / short)}
        for short, full in COMMON_SNAPSHOTS.items()
    }
    write(
        OUT / "mlperf-common.json",
        {
            "repository": "NVIDIA/mlperf-common",
            "note": "SHA-256 of every file of the NVIDIA/mlperf-common snapshots, by commit",
            "snapshots": snapshots,
        },
    )


def write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
