"""What the real image builds of the tests need: enroot, podman and a small Debian base.

The base is `mmdebstrap --variant=minbase --include=python3 bookworm` (about a minute, 220 MB),
cached by the hash of its recipe under $HPCREPRO_TEST_CACHE (default ~/.cache/hpcrepro-test),
as a root file system folder, a squashfs for enroot and a podman image. enroot comes from
$HPCREPRO_TEST_ENROOT, else the test runtime build (tests/runtime/build.sh) when the checkout has
it, else the enroot built by hand on the project machine. Missing tools skip, or fail under CI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mxnet_env import cache_dir

ROOT = Path(__file__).resolve().parent.parent
MMDEBSTRAP = ["--variant=minbase", "--include=python3", "--mode=root", "bookworm"]
# enroot 4.1.2 built on the project machine from ../shared (until tests/runtime/ provides it).
HAND_BUILT_ENROOT = Path("/tmp/rt/enroot-inst/bin/enroot")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true the image build tests must run", pytrace=False)
    pytest.skip(reason)


def recipe_key() -> str:
    return hashlib.sha256(" ".join(MMDEBSTRAP).encode()).hexdigest()[:12]


def debian_base() -> Path:
    """The cached folder holding rootfs/ and base.sqsh of the test base."""
    for tool in ("mmdebstrap", "mksquashfs"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (scripts/install-system-deps.sh installs it)")
    if os.geteuid() != 0:
        unavailable("mmdebstrap --mode=root needs root")
    folder = cache_dir() / f"image-base-{recipe_key()}"
    if (folder / "READY").is_file():
        return folder
    building = folder.with_name(f"{folder.name}.building.{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    subprocess.run(
        ["mmdebstrap", "--quiet", *MMDEBSTRAP, str(building / "rootfs")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            "mksquashfs",
            str(building / "rootfs"),
            str(building / "base.sqsh"),
            "-comp",
            "lz4",
            "-quiet",
            "-noappend",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (building / "READY").write_text(" ".join(MMDEBSTRAP) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)
    return folder


def podman_base() -> str:
    """A podman image of the test base (with a CMD: `enroot import podman://` needs one)."""
    if shutil.which("podman") is None:
        unavailable("podman is not installed (scripts/install-system-deps.sh installs it)")
    name = f"localhost/hpcrepro-test-base:{recipe_key()}"
    exists = subprocess.run(["podman", "image", "exists", name], capture_output=True)
    if exists.returncode != 0:
        rootfs = debian_base() / "rootfs"
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "--change", 'CMD ["/bin/sh"]', "-", name],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar.wait()
    return name


def enroot_program() -> Path:
    """The enroot binary the real builds use (see the module docstring)."""
    explicit = os.environ.get("HPCREPRO_TEST_ENROOT")
    if explicit:
        return Path(explicit)
    build = ROOT / "tests" / "runtime" / "build.sh"
    if build.is_file():
        out = subprocess.run(["bash", str(build)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.fail(f"tests/runtime/build.sh failed:\n{out.stderr[-2000:]}", pytrace=False)
        return Path(out.stdout.strip().splitlines()[-1]) / "prefix" / "bin" / "enroot"
    if HAND_BUILT_ENROOT.is_file():
        return HAND_BUILT_ENROOT
    unavailable("no enroot: set HPCREPRO_TEST_ENROOT to an enroot 4.x binary")
    raise AssertionError  # unreachable


def enroot_env(tmp: Path, enroot: Path) -> dict[str, str]:
    """The environment of a test build: enroot first on PATH, its folders private to the test."""
    env = dict(os.environ)
    env["PATH"] = f"{enroot.parent}{os.pathsep}{env['PATH']}"
    for name in ("DATA", "CACHE", "RUNTIME"):
        folder = tmp / f"enroot-{name.lower()}"
        folder.mkdir(exist_ok=True)
        env[f"ENROOT_{name}_PATH"] = str(folder)
    return env
