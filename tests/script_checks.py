"""Rendered job scripts must parse (`bash -n`) and be shellcheck-clean at style level."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def check_scripts(*paths: Path) -> None:
    """`bash -n` each script, then shellcheck all of them (required under CI, which installs it)."""
    for path in paths:
        subprocess.run(["bash", "-n", str(path)], check=True)
    checker = shutil.which("shellcheck")
    if checker is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is missing: scripts/install-system-deps.sh installs it")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run([checker, "-S", "style", *map(str, paths)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout
