"""Real small file systems for the full-disk tests (mounting needs root, as CI has)."""

from __future__ import annotations

import os
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
