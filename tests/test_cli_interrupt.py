"""Ctrl-C ends any command with exit 130 and says so (typer alone would exit without a word)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

SLOW_COMMAND = """
import time
from hpcrepro import cli

@cli.app.command("nap")
def nap() -> None:
    print("napping", flush=True)
    time.sleep(60)

cli.main()
"""


def test_ctrl_c_says_interrupted_and_exits_130() -> None:
    process = subprocess.Popen([sys.executable, "-c", SLOW_COMMAND, "nap"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "napping\n"  # the command runs: now interrupt it
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.strip() == "interrupted"
