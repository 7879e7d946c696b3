"""The layering of docs/DESIGN.md holds: no import cycle between modules or packages of
src/hpcrepro (function-local imports count; they are how cycles hid before issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_cycles() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import-graph.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "module cycles: 0\n" in done.stdout, done.stdout
    assert "package cycles: 0" in done.stdout, done.stdout
