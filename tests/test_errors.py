"""A UserError's text is inert: names and data quoted in it cannot drive the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hpcrepro.errors import UserError, inert

SRC = Path(__file__).resolve().parent.parent / "src"


def test_control_characters_are_escaped_but_the_layout_stays() -> None:
    error = UserError("a\x1b[2Jb\r\nc\td\x00", where="x\x07", hint="h\x9b\x7f")
    assert error.render() == "x\\x07: a\\x1b[2Jb\\x0d\nc\td\\x00\nhint: h\\x9b\\x7f"
    assert inert("plain text, ünïcode\n") == "plain text, ünïcode\n"


def test_a_path_with_escapes_reaches_stderr_inert(tmp_path: Path) -> None:
    """Before, `prep imagenet --raw $'x\\e]0;owned\\a'` retitled the terminal window."""
    raw = tmp_path / "raw\x1b]0;owned\x07\x1b[2J"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "hpcrepro", "prep", "imagenet", "--raw", str(raw), "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert "raw\\x1b]0;owned\\x07\\x1b[2J" in done.stderr, done.stderr
