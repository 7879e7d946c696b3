"""Where NVIDIA published the code of a catalog entry, and the SHA-256 of every file of it.

The data files beside this module (`published/v2.1.json` ... and `mlperf-common.json`) are
written by `scripts/image-code-manifests.py` from the byte-for-byte copies in the shared research
folder, and ship inside the wheel. The repository and commit of each round are
`hpcrepro.rounds`' (the files repeat them as a record of what was hashed, and a test holds
the two together).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcrepro import rounds
from hpcrepro.errors import UserError

DATA_DIR = Path(__file__).resolve().parent / "published"
IMPLEMENTATIONS = "benchmarks/resnet/implementations"
_SOURCE = re.compile(
    r"^mlcommons/training_results_(v[0-9.]+):\s*([A-Za-z0-9_.-]+)/" + IMPLEMENTATIONS + r"/([^/]+)/"
)


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    executable: bool


@dataclass(frozen=True)
class CodeLocation:
    """One implementation folder in one MLCommons results repository at a pinned commit."""

    round: str  # v3.0
    repository: str  # mlcommons/training_results_v3.0
    commit: str
    path: str  # NVIDIA/benchmarks/resnet/implementations/mxnet
    files: dict[str, FileEntry]
    mlperf_common: str | None  # pinned NVIDIA/mlperf-common commit, when requirements name it

    @property
    def label(self) -> str:
        return f"{self.repository}@{self.commit[:12]}:{self.path}"

    def tree_digest(self) -> str:
        """One hash of the whole manifest: part of the image-cache key."""
        import hashlib

        text = "\n".join(
            f"{name} {entry.sha256} {int(entry.executable)}"
            for name, entry in sorted(self.files.items())
        )
        return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def _round_data(round_name: str) -> dict[str, Any]:
    path = DATA_DIR / f"{round_name}.json"
    if not path.is_file():
        raise UserError(
            f"hpcrepro has no record of NVIDIA's {round_name} code",
            hint="rounds with code records: "
            + ", ".join(sorted(p.stem for p in DATA_DIR.glob("v*.json"))),
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@functools.cache
def mlperf_common_snapshots() -> dict[str, dict[str, FileEntry]]:
    """NVIDIA/mlperf-common commit -> its files, for the snapshots that were hashed."""
    data = json.loads((DATA_DIR / "mlperf-common.json").read_text())
    return {commit: _files(block["files"]) for commit, block in data["snapshots"].items()}


def _files(raw: dict[str, Any]) -> dict[str, FileEntry]:
    return {
        name: FileEntry(sha256=entry["sha256"], executable=bool(entry.get("executable")))
        for name, entry in raw.items()
    }


def submitter_of(source: str, round_name: str, implementation: str) -> str:
    """The submitter folder (NVIDIA, NVIDIA_CoreWeave...) named by a catalog entry's `source`
    when it points into this round's repository and implementation; NVIDIA otherwise."""
    match = _SOURCE.match(source)
    if match and match.group(1) == round_name and match.group(3) == implementation:
        return match.group(2)
    return "NVIDIA"


def locate(version: str, implementation: str, source: str) -> CodeLocation:
    """The published folder of a catalog entry (`implementation` and `source` keys)."""
    entry = rounds.get(version, where="catalog version")
    round_name = entry.results_round
    data = _round_data(round_name)
    submitter = submitter_of(source, round_name, implementation)
    path = f"{submitter}/{IMPLEMENTATIONS}/{implementation}"
    block = data["implementations"].get(path)
    if block is None:
        known = sorted(p.rsplit("/", 1)[-1] for p in data["implementations"])
        raise UserError(
            f"{entry.results_repository} has no folder {path}",
            where="catalog key 'implementation'",
            hint=f"implementation folders of {round_name}: {', '.join(known)}",
        )
    pin = block.get("mlperf_common")
    return CodeLocation(
        round=round_name,
        repository=entry.results_repository,
        commit=entry.results_commit,
        path=path,
        files=_files(block["files"]),
        mlperf_common=pin["commit"] if pin else None,
    )
