"""NVIDIA's requirements.txt, made reproducible and usable offline.

Two lines install from GitHub: mlperf-logging at a tag (`git+https://github.com/mlcommons/
logging.git@3.0.0-rc1`) and mlperf-common, often without any commit. The mlperf-common line is
pinned to the commit recorded for the implementation (see `scripts/image-code-manifests.py`).
With a wheels folder (`--wheels DIR`, site key `image_wheels_dir`) both lines point at a wheel or
a source folder there instead, mounted at `/.hpcrepro-wheels` during the build only: what a
cluster without GitHub needs. A mlperf-common source folder is checked file by file against the
pinned snapshot when hpcrepro has its hashes; a mlperf-logging wheel must carry the tag's version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from hpcrepro.errors import UserError

WHEELS_MOUNT = "/.hpcrepro-wheels"
_GIT_LINE = re.compile(
    r"^git\+https://github\.com/(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?"
    r"(?:@(?P<rev>[A-Za-z0-9_.+-]+))?(?:#.*)?$"
)
# GitHub repository -> the Python project it builds.
PROJECTS = {"NVIDIA/mlperf-common": "mlperf-common", "mlcommons/logging": "mlperf-logging"}


@dataclass
class Resolved:
    """requirements.txt as the build installs it, and the local sources it uses."""

    text: str
    original: str
    local: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.text != self.original

    def digest(self) -> str:
        """The text and the bytes of every local source: part of the image-cache key."""
        digest = hashlib.sha256(self.text.encode())
        for path in self.local:
            digest.update(path.name.encode())
            digest.update(_content_digest(path).encode())
        return digest.hexdigest()


def _content_digest(path: Path) -> str:
    from hpcrepro.image.code import file_sha256

    if path.is_file():
        return file_sha256(path)
    lines = [
        f"{item.relative_to(path).as_posix()} {file_sha256(item)}"
        for item in sorted(path.rglob("*"))
        if item.is_file() and ".git" not in item.relative_to(path).parts
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def candidate_digest(wheels: Path) -> str:
    """A hash of every wheel or source folder of the replaced projects in `wheels` (part of the
    image key, computed before the requirements are read)."""
    digest = hashlib.sha256()
    if wheels.is_dir():
        for item in sorted(wheels.iterdir()):
            name = item.name.split("-", 1)[0] if item.suffix == ".whl" else item.name
            if _canonical(name) in PROJECTS.values():
                digest.update(f"{item.name} {_content_digest(item)}\n".encode())
    return digest.hexdigest()


def resolve(text: str, where: str, mlperf_common: str | None, wheels: Path | None) -> Resolved:
    """Pin mlperf-common to `mlperf_common`; with `wheels`, use its local sources."""
    result = Resolved(text="", original=text)
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _GIT_LINE.match(line.strip())
        if not match:
            if wheels is not None and line.strip().startswith("git+"):
                raise UserError(
                    f"requirement '{line.strip()}' installs from git, and only mlperf-logging "
                    "and mlperf-common have a local replacement",
                    where=f"{where}:{number}",
                    hint="build on a node with network, or use your own Dockerfile (--dockerfile)",
                )
            out.append(line)
            continue
        repo, rev = match.group("repo"), match.group("rev")
        project = PROJECTS.get(repo)
        if project == "mlperf-common" and not rev:
            if mlperf_common is None:
                raise UserError(
                    f"'{line.strip()}' names no commit, and none is recorded for this folder",
                    where=f"{where}:{number}",
                    hint="use your own Dockerfile and requirements (--dockerfile) with a pin",
                )
            rev = mlperf_common
            result.notes.append(f"mlperf-common pinned to {rev[:12]} (NVIDIA's line names none)")
        if wheels is None:
            out.append(f"git+https://github.com/{repo}.git@{rev}" if rev else line)
            continue
        if project is None:
            raise UserError(
                f"requirement '{line.strip()}' installs from git and has no local replacement",
                where=f"{where}:{number}",
                hint="build on a node with network, or use your own Dockerfile (--dockerfile)",
            )
        local = _local_source(wheels, project, rev or "", result)
        result.local.append(local)
        out.append(f"{WHEELS_MOUNT}/{local.name}")
    result.text = "\n".join(out) + ("\n" if text.endswith("\n") else "")
    return result


def _local_source(wheels: Path, project: str, rev: str, result: Resolved) -> Path:
    """The one wheel or source folder of `project` in the wheels folder, checked."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    where = f"wheels folder {wheels}"
    if not wheels.is_dir():
        raise UserError(
            f"{wheels} is not a folder",
            where=where,
            hint="give a folder holding the wheels or source folders",
        )
    candidates: list[tuple[Path, str | None]] = []
    for item in sorted(wheels.iterdir()):
        if item.is_dir() and _canonical(item.name) == project:
            candidates.append((item, None))
        elif item.suffix == ".whl":
            try:
                name, version, _, _ = parse_wheel_filename(item.name)
            except InvalidWheelFilename:
                continue
            if name == project:
                candidates.append((item, str(version)))
    if not candidates:
        raise UserError(
            f"no wheel or source folder of {project} in {wheels}",
            where=where,
            hint=f"put a {project} wheel there, or its source checkout at {rev or 'the pin'} in a "
            f"folder named {project}",
        )
    if project == "mlperf-logging" and rev:
        wanted: Version | None
        try:
            wanted = Version(rev)
        except InvalidVersion:
            wanted = None
        matching = [c for c in candidates if c[1] is None or (wanted and Version(c[1]) == wanted)]
        if not matching:
            raise UserError(
                f"the mlperf-logging wheels in {wheels} are "
                f"{', '.join(str(c[1]) for c in candidates)}, not {rev} as requirements.txt pins",
                where=where,
                hint=f"build a wheel of mlcommons/logging at {rev} (`pip wheel "
                f"git+https://github.com/mlcommons/logging.git@{rev}` on a node with network)",
            )
        candidates = matching
    if len(candidates) > 1:
        raise UserError(
            f"{len(candidates)} candidates for {project} in {wheels}: "
            + ", ".join(c[0].name for c in candidates),
            where=where,
            hint="keep one wheel or source folder per project there",
        )
    path, found_version = candidates[0]
    if project == "mlperf-common" and found_version is None:
        _check_common_folder(path, rev, result)
    elif project == "mlperf-common":
        result.notes.append(f"{path.name}: a wheel's commit cannot be checked; pinned {rev[:12]}")
    elif found_version is None:
        result.notes.append(f"{path.name}: source folder used as it is for mlperf-logging {rev}")
    return path


def _check_common_folder(path: Path, commit: str, result: Resolved) -> None:
    from hpcrepro.image.code import verify_tree
    from hpcrepro.image.published import mlperf_common_snapshots

    files = mlperf_common_snapshots().get(commit)
    if files is None:
        result.notes.append(
            f"{path.name}: no hashes of mlperf-common {commit[:12]} are recorded; used unchecked"
        )
        return
    verify_tree(path, files, f"NVIDIA/mlperf-common at {commit[:12]}", f"wheels folder {path}")
