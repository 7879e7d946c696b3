"""`collect --plot` and `--package` onto hostile places: refused at once with exit 2, never a
hang or a traceback, never half a tree left behind, and files with the usual permissions."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from results_helpers import research  # noqa: F401

SRC = Path(__file__).resolve().parent.parent / "src"
EOS_N8 = "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"
QUICK = ("--version", "r4.0", "--no-official-check")
HANG = 300  # a run takes seconds; only a hang (a FIFO opened for reading) comes near this


@pytest.fixture
def logs(research: Path, tmp_path: Path) -> Path:  # noqa: F811
    folder = tmp_path / "logs"
    shutil.copytree(research / EOS_N8, folder)
    return folder


def collect(*args: str | Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", "collect", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=HANG, preexec_fn=lambda: os.umask(umask),
    )  # fmt: skip


def refused(
    result: subprocess.CompletedProcess[str], *needles: str, before_scoring: bool = True
) -> None:
    """Exit 2 without a traceback; `before_scoring`: not even the table was printed."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "" or not before_scoring, result.stdout
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_plot_onto_a_fifo_a_device_or_a_link_to_one_is_refused_without_opening(
    logs: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "plot.png"
    os.mkfifo(fifo)
    (tmp_path / "null.png").symlink_to("/dev/null")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere")
    for target in (fifo, tmp_path / "null.png", tmp_path / "dangling.png"):
        refused(collect(logs, *QUICK, "--plot", target), f"--plot {target}", "not a file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # left as it was


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_plots_get_the_permissions_of_any_new_file(
    logs: Path, tmp_path: Path, umask: int, mode: int
) -> None:
    plot = tmp_path / "runs.png"
    result = collect(logs, *QUICK, "--plot", plot, umask=umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(plot.stat().st_mode) == mode
    result = collect(logs, *QUICK, "--plot", plot, umask=umask)  # replaced: the same again
    assert result.returncode == 0 and stat.S_IMODE(plot.stat().st_mode) == mode


@pytest.mark.parametrize("option", ["--plot", "--package"])
def test_outputs_on_proc_are_refused_before_scoring(logs: Path, option: str) -> None:
    target = "/proc/hpcrepro.png" if option == "--plot" else "/proc/hpcrepro-package"
    refused(collect(logs, *QUICK, option, target), f"{option} {target}", "cannot write in /proc")


@pytest.mark.parametrize("blocker", ["benchmarks", "results", "systems", "results/logs"])
def test_package_with_a_file_in_the_way_leaves_the_tree_as_it_was(
    logs: Path, tmp_path: Path, blocker: str
) -> None:
    """`benchmarks` a file: before, systems/ and results/ were moved in and left behind."""
    tree = tmp_path / "submission"
    (tree / blocker).parent.mkdir(parents=True, exist_ok=True)
    (tree / blocker).write_text("mine")
    before = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    result = collect(logs, *QUICK, "--package", tree)
    # the tree's names are known once the runs are scored: the table comes first
    refused(
        result, f"{tree / blocker} is not a folder", "nothing was written", before_scoring=False
    )
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == before
    assert (tree / blocker).read_text() == "mine"


def test_package_into_a_new_an_empty_and_a_shared_folder(logs: Path, tmp_path: Path) -> None:
    """New and empty folders get the tree in one rename; a submitter's folder with another
    benchmark keeps it beside the new tree."""
    expected = {"systems/logs.json", "results/logs/resnet/result_0.txt",
                "benchmarks/resnet/implementations/logs_hpcrepro/README.md"}  # fmt: skip
    (tmp_path / "empty").mkdir()
    shared = tmp_path / "shared"
    (shared / "results" / "other" / "bert").mkdir(parents=True)
    (shared / "results" / "other" / "bert" / "result_0.txt").write_text("bert")
    for tree in (tmp_path / "new" / "deeper", tmp_path / "empty", shared):
        result = collect(logs, *QUICK, "--package", tree)
        assert result.returncode == 0, result.stderr
        names = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}
        assert expected <= names, names
        assert not [p for p in tree.parent.iterdir() if "staging" in p.name]
        assert not [p for p in tree.iterdir() if "staging" in p.name]
    assert (shared / "results" / "other" / "bert" / "result_0.txt").read_text() == "bert"


def test_package_copies_no_linked_file_or_folder_of_the_campaign(
    research: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from test_results_cli import make_campaign

    campaign = make_campaign(research, tmp_path / "camp")
    secret = tmp_path / "secret"
    (secret / "deep").mkdir(parents=True)
    (secret / "deep" / "keys.sh").write_text("export TOKEN=hunter2\n")
    (campaign / "stolen.sh").symlink_to(secret / "deep" / "keys.sh")
    (campaign / "linked").symlink_to(secret)
    tree = tmp_path / "submission"
    result = collect(campaign, "--no-official-check", "--package", tree)
    assert result.returncode == 0, result.stderr
    copied = {p.name for p in tree.rglob("*")}
    assert "run.sub" in copied and "resolved-config.json" in copied
    assert not copied & {"stolen.sh", "linked", "keys.sh"}, copied
    assert "hunter2" not in "".join(
        p.read_text() for p in tree.rglob("*") if p.is_file() and p.suffix != ".txt"
    )
