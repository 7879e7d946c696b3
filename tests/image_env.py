"""What the real image builds of the tests need: enroot, podman and a small Debian base.

The base is the pyxis tests' Debian 12 image (tests/runtime/images.py: mmdebstrap, cached by
its recipe under $HPCREPRO_TEST_CACHE), as a root file system folder, a squashfs for enroot and a
podman image. enroot comes from $HPCREPRO_TEST_ENROOT, else the test runtime build
(tests/runtime/build.sh). Missing tools skip, or fail under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime"))
import images

ROOT = Path(__file__).resolve().parent.parent


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true the image build tests must run", pytrace=False)
    pytest.skip(reason)


def debian_base() -> Path:
    """The cached folder holding rootfs/ and base.sqsh: the pyxis tests' base image."""
    if os.geteuid() != 0:
        unavailable("mmdebstrap --mode=root needs root")
    try:
        return images.base_image()
    except images.ImageBuildError as error:
        unavailable(f"the test base image was not made: {error}")
        raise


def podman_base() -> str:
    """A podman image of the test base (with a CMD: `enroot import podman://` needs one)."""
    if shutil.which("podman") is None:
        unavailable("podman is not installed (scripts/install-system-deps.sh installs it)")
    name = f"localhost/hpcrepro-test-base:{debian_base().name.removeprefix('base-')}"
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
