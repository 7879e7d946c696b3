"""NVIDIA's implementation folder: fetch it at the pinned commit, check it file by file, stage it.

A tree is accepted only when every file NVIDIA published is there with its SHA-256 (and its
executable bit: `./run_and_time.sh` must run), and nothing else that the image would copy is.
Ignored: VCS metadata (`.git`), Python caches, and NVIDIA's prebuilt `cuda_graphs/graph_lib.so`,
which the results repositories hold but the Dockerfile rebuilds against the base image's CUDA;
the staged build context leaves it out so that `make` always builds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.image.published import CodeLocation, FileEntry

GIT_MIRROR_ENV = "HPCREPRO_GIT_MIRROR"
PREBUILT = frozenset({"cuda_graphs/graph_lib.so"})
_IGNORED_DIRS = frozenset({".git", "__pycache__"})
_SHOWN = 5


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Relative name -> path of every regular file; and the names of links/special files."""
    found: dict[str, Path] = {}
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in list(dirnames):
            if name in _IGNORED_DIRS or (base / name).is_symlink():
                dirnames.remove(name)
                if name not in _IGNORED_DIRS:
                    odd.append((base / name).relative_to(folder).as_posix())
        for name in filenames:
            path = base / name
            relative = path.relative_to(folder).as_posix()
            if name.endswith(".pyc"):
                continue
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                odd.append(relative)
            else:
                found[relative] = path
    return found, odd


def _listing(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:_SHOWN])
    more = len(names) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def verify_tree(folder: Path, files: dict[str, FileEntry], label: str, where: str) -> None:
    """Refuse `folder` unless it holds exactly `files` (name, SHA-256, executable bit)."""
    if not folder.is_dir():
        raise UserError(
            f"{folder} is not a folder" + ("" if folder.exists() else " (it does not exist)"),
            where=where,
            hint=f"give the folder {label} (a checkout of it), or leave the option out to "
            "fetch it on a node with network",
        )
    found, odd = _walk(folder)
    hint = (
        f"use an unmodified copy of {label}: `git checkout` that commit, or fetch it again "
        "(leave out --code / image_code_dir on a node with network)"
    )
    if odd:
        raise UserError(
            f"{folder} holds links or special files, which NVIDIA's folder has not: "
            f"{_listing(odd)}",
            where=where,
            hint=hint,
        )
    missing = [name for name in files if name not in found]
    extra = [name for name in found if name not in files and name not in PREBUILT]
    changed = [
        name for name in files if name in found and file_sha256(found[name]) != files[name].sha256
    ]
    if missing or extra or changed:
        parts = []
        if missing:
            parts.append(f"missing: {_listing(missing)}")
        if changed:
            parts.append(f"changed: {_listing(changed)}")
        if extra:
            parts.append(f"not in NVIDIA's folder: {_listing(extra)}")
        raise UserError(
            f"{folder} is not {label}; " + "; ".join(parts),
            where=where,
            hint=hint
            + (
                ". Site changes belong in your own Dockerfile (--dockerfile), not in "
                "NVIDIA's folder"
                if extra or changed
                else ""
            ),
        )
    lost = [
        name
        for name, entry in files.items()
        if entry.executable and not os.access(found[name], os.X_OK)
    ]
    if lost:
        raise UserError(
            f"{folder}: {_listing(lost)} lost the executable bit NVIDIA's files have",
            where=where,
            hint=f"chmod +x them (e.g. `chmod +x {folder}/*.sh`), or fetch the folder again",
        )


def git_url(repository: str) -> str:
    """https://github.com/OWNER/NAME.git, or the same name below $HPCREPRO_GIT_MIRROR."""
    mirror = os.environ.get(GIT_MIRROR_ENV, "").rstrip("/")
    return f"{mirror}/{repository}.git" if mirror else f"https://github.com/{repository}.git"


def fetch(location: CodeLocation, work: Path) -> Path:
    """Check out only `location.path` of its repository at the pinned commit, below `work`.

    A sparse, blob-less, depth-1 fetch of one commit: a few hundred kilobytes instead of the
    results repository's gigabytes of logs. Needs git and network (or $HPCREPRO_GIT_MIRROR).
    """
    git = shutil.which("git")
    if git is None:
        raise UserError(
            "git is not installed here, and the code must be fetched",
            hint=f"install git, or give an offline copy of {location.label} with --code DIR "
            "(site key image_code_dir)",
        )
    url = git_url(location.repository)
    clone = work / "results-checkout"
    steps = [
        [git, "init", "-q", str(clone)],
        [git, "-C", str(clone), "remote", "add", "origin", url],
        [git, "-C", str(clone), "sparse-checkout", "set", "--no-cone", f"/{location.path}/"],
        [git, "-C", str(clone), "fetch", "-q", "--depth", "1", "--filter=blob:none", "origin",
         location.commit],
        [git, "-C", str(clone), "-c", "advice.detachedHead=false", "checkout", "-q",
         "FETCH_HEAD"],
    ]  # fmt: skip
    for command in steps:
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        )
        if result.returncode != 0:
            raise UserError(
                f"fetching {location.label} from {url} failed at `git "
                f"{command[3] if command[1] == '-C' else command[1]}`: "
                f"{(result.stderr or result.stdout).strip()[-400:]}",
                hint="run on a node with network (or set $HPCREPRO_GIT_MIRROR to a mirror of "
                "the MLCommons repositories), or download the folder elsewhere and give it "
                "with --code DIR (site key image_code_dir)",
            )
    folder = clone / location.path
    verify_tree(folder, location.files, location.label, f"git {url} {location.commit[:12]}")
    return folder


def stage(folder: Path, location: CodeLocation, dest: Path) -> Path:
    """Copy the verified code into `dest`, the build context (without .git, caches and the
    prebuilt graph_lib.so), so the build can replace requirements.txt without touching it."""
    files = set(location.files)

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(folder)
        return {
            name
            for name in names
            if (relative / name).as_posix() not in files and not (Path(directory) / name).is_dir()
        } | {name for name in names if name in _IGNORED_DIRS}

    shutil.copytree(folder, dest, ignore=ignore, symlinks=True)
    for directory, _, names in os.walk(dest):  # a read-only copy (as shared/ is) stays usable
        os.chmod(directory, 0o755)
        for name in names:
            path = Path(directory, name)
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest
