"""Shared helpers for the results tests: the real MLPerf logs and raw-log builders."""

from __future__ import annotations

import csv
import sys
import tarfile
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data" / "results"
ARCHIVE = DATA / "mlperf-resnet-results.tar.xz"


@pytest.fixture(scope="session")
def research(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The research logs (74 result directories, MLCommons, Apache-2.0), extracted once."""
    root = tmp_path_factory.mktemp("research")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    return root


def published_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "scores.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def ruleset_of(version: str) -> str:
    return version[1:] + ".0"


def rawify(source: Path, target: Path, ranks: int = 2, noise: bool = True) -> Path:
    """A realistic raw Slurm log from a clean result file: srun -l prefixes, every rank's copy of
    each MLLOG line, NCCL chatter, a carriage-return progress bar and :::SYSJSON/:::DLPAL lines."""
    out = []
    if noise:
        out.append("+ echo 'Beginning trial 1 of 5'")
        out.append(':::DLPAL dgxh100 314 8 prefix')
    for line in source.read_text(encoding="latin-1").splitlines():
        if ":::MLLOG" not in line:
            out.append(line)
            continue
        for rank in range(ranks):
            out.append(f"{rank}: {line}")
        if noise:
            out.append("0: node001:1234:1234 [0] NCCL INFO Channel 00/32 : 0 1 2 3")
            out.append("0: [epoch 3] 10%|#  |\r0: [epoch 3] 55%|#####  |\r0: done")
    target.write_text("\n".join(out) + "\n", encoding="latin-1")
    return target


_GROUP_WRAPPER = """
import sys, typer
from hpcrepro.cli import print_user_error
from hpcrepro.commands.results import register
from hpcrepro.errors import USER_ERROR_EXIT, UserError
app = typer.Typer(pretty_exceptions_enable=False)
app.callback()(lambda: None)
register(app)
try:
    app(sys.argv[1:], prog_name="hpcrepro")
except UserError as error:
    print_user_error(error)
    sys.exit(USER_ERROR_EXIT)
"""


def run_cli(*args: str) -> tuple[int, str, str]:
    """Invoke `hpcrepro <args>` in a fresh interpreter, as DESIGN.md asks.

    While `collect` is the only command registered (this branch alone), typer would collapse the
    app into that single command, so the same registration is wrapped in a command group.
    """
    import subprocess

    from hpcrepro.cli import app

    if len(app.registered_commands) > 1:
        command = [sys.executable, "-m", "hpcrepro", *args]
    else:
        command = [sys.executable, "-c", _GROUP_WRAPPER, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    return done.returncode, done.stdout, done.stderr
