"""Where the shared research folder is: NVIDIA's published code, result logs, enroot and pyxis.

It sits beside the checkout (`../shared`); $HPCREPRO_SHARED_DIR names it explicitly. A clone
made elsewhere (say `git clone . /tmp/x`) falls back to the workplace's own `/work/shared`.
Tests read it in place and never copy it into the project. Plain standard library: the test
images' programs import it too.
"""

from __future__ import annotations

import os
from pathlib import Path

WORKPLACE_SHARED = Path("/work/shared")


def shared_dir() -> Path:
    explicit = os.environ.get("HPCREPRO_SHARED_DIR")
    if explicit:
        return Path(explicit)
    beside = Path(__file__).resolve().parents[1].parent / "shared"
    if beside.is_dir() or not WORKPLACE_SHARED.is_dir():
        return beside
    return WORKPLACE_SHARED
