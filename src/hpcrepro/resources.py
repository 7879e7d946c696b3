"""Where the shipped templates and system catalog live, and the package itself.

In a wheel they are packaged inside `hpcrepro/` (see pyproject's force-include); in a source
checkout or editable install they stay at the repository root, two levels above this file.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    packaged = _PACKAGE_DIR / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE_DIR.parent.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"hpcrepro data folder '{name}' is missing from the installation")


def templates_dir() -> Path:
    return _data_dir("templates")


def systems_dir() -> Path:
    return _data_dir("systems")


def package_root() -> str:
    """The folder holding the `hpcrepro` package: what a job's PYTHONPATH needs so that it runs
    this very hpcrepro (a checkout or an install) on a node sharing the file system."""
    return str(_PACKAGE_DIR.parent)


def package_pythonpath() -> str:
    """PYTHONPATH for a child process: this hpcrepro first, then what was set."""
    import os

    current = os.environ.get("PYTHONPATH")
    return f"{package_root()}:{current}" if current else package_root()
