"""Run the CLI with stdout and/or stderr on a real pseudo-terminal (python's `pty`), the others
piped, and return what each showed: how the progress displays are tested as a user sees them."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


@dataclass
class Shown:
    returncode: int
    tty: str  # everything written to the terminal (stdout and/or stderr, as asked)
    stdout: str  # stdout when it was piped, else ""
    stderr: str  # stderr when it was piped, else ""


def cli_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.setdefault("TERM", "xterm-256color")
    env["COLUMNS"], env["LINES"] = "160", "50"
    return env


def run_on_tty(
    args: list[str],
    *,
    env: dict[str, str],
    tty_stdout: bool = False,
    tty_stderr: bool = True,
    timeout: float = 120,
) -> Shown:
    """`python -m hpcrepro ARGS` with the chosen streams on one pseudo-terminal."""
    leader, follower = pty.openpty()
    out_target = follower if tty_stdout else subprocess.PIPE
    err_target = follower if tty_stderr else subprocess.PIPE
    process = subprocess.Popen(
        [sys.executable, "-m", "hpcrepro", *args],
        stdin=subprocess.DEVNULL,
        stdout=out_target,
        stderr=err_target,
        env=env,
    )
    os.close(follower)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    piped = [s for s in (process.stdout, process.stderr) if s is not None]
    chunks: dict[int, bytearray] = {s.fileno(): bytearray() for s in piped}
    open_fds = {leader, *chunks}
    while open_fds:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"hpcrepro {' '.join(args)} ran past {timeout} s:\n{seen!r}")
        ready, _, _ = select.select(list(open_fds), [], [], 0.5)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                data = b""
            if not data:
                open_fds.discard(fd)
                continue
            (seen if fd == leader else chunks[fd]).extend(data)
    os.close(leader)
    code = process.wait(timeout=30)
    return Shown(
        code,
        seen.decode(errors="replace"),
        chunks[process.stdout.fileno()].decode() if process.stdout else "",
        chunks[process.stderr.fileno()].decode() if process.stderr else "",
    )
