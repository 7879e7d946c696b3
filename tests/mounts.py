"""Real file-system conditions for tests: a small tmpfs (full disk, read-only) and mode-000
folders that bite even for root (CI runs as root on Debian)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_filesystem(path: Path, size: str, *options: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `path` for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                    str(path)], check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def without_read_override() -> list[str]:
    """A command prefix under which mode 000 bites: root's CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH dropped with setpriv (util-linux, always there on Debian)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("setpriv is missing: it comes with util-linux")
        pytest.skip("root reads mode-000 folders anyway; dropping that needs setpriv (util-linux)")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
