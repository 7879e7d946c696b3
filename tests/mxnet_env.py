"""A cached venv with MXNet 1.9.1 from PyPI, so MXNet's own code judges the RecordIO files.

mxnet 1.9.1 has wheels up to Python 3.11 and needs numpy < 1.24; its im2rec.py (shipped inside the
wheel as mxnet/tools/im2rec.py) imports cv2. The venv lives under $HPCREPRO_TEST_CACHE (default
~/.cache/hpcrepro-test) and is built once: later runs reuse it. System libraries it loads:
libgomp1 and libquadmath0 (Debian package names); libgfortran ships inside the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = ("mxnet==1.9.1", "numpy<1.24", "opencv-python-headless<4.12")


def cache_dir() -> Path:
    base = os.environ.get("HPCREPRO_TEST_CACHE") or os.path.expanduser("~/.cache/hpcrepro-test")
    return Path(base)


def _python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        raise RuntimeError("mxnet 1.9.1 needs Python 3.11, and no python3.11 is on PATH")
    return found


def ensure_venv() -> Path:
    """Path of the venv's python, building the venv first if it is missing or incomplete."""
    venv = cache_dir() / "mxnet-1.9.1-venv"
    python = venv / "bin" / "python"
    ready = venv / "READY"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if ready.is_file() and ready.read_text() == wanted and python.exists():
        return python
    building = venv.with_name(f"{venv.name}.building.{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([_python311(), "-m", "venv", str(building)], check=True)
    subprocess.run(
        [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *REQUIREMENTS],
        check=True,
    )  # fmt: skip
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)  # paths inside a venv are relative; only unused bin/ shebangs go stale
    check = subprocess.run(
        [str(python), "-c", "import mxnet, cv2; print(mxnet.__version__)"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise RuntimeError(
            "mxnet does not import (missing system libraries? apt-get install libgomp1 "
            f"libquadmath0):\n{check.stderr[-2000:]}"
        )
    ready.write_text(wanted)
    return python


def im2rec_script(python: Path) -> Path:
    """mxnet's own tools/im2rec.py, as shipped inside the installed wheel."""
    out = subprocess.run(
        [str(python), "-c", "import mxnet, os; print(os.path.dirname(mxnet.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    script = Path(out.stdout.strip()) / "tools" / "im2rec.py"
    if not script.is_file():
        raise RuntimeError(f"{script} is missing from the mxnet wheel")
    return script
