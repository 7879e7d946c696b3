"""Progress as a user sees it: each long command run on a real pseudo-terminal (bars, live views)
and piped (a few plain lines, nothing redrawn), and with --json (one document, no bars)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ttyrun
from campaign_helpers import SYSTEM, hpcrepro, make_site
from campaign_helpers import cli_env as campaign_env
from image_env import debian_base, enroot_env, enroot_program
from prep_data import SyntheticSet, make_imagenet
from test_image_build import SHAPE, code

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "\n")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSet:
    return make_imagenet(
        tmp_path_factory.mktemp("imagenet"), classes=4, train_per_class=60, val_per_class=10
    )


def piped(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *map(str, args)],
        capture_output=True, text=True, env=ttyrun.cli_env(), timeout=120,
    )  # fmt: skip


def test_prep_on_a_terminal_shows_a_bar_per_split(synthetic: SyntheticSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shown = ttyrun.run_on_tty(
        ["prep", "imagenet", "--raw", str(synthetic.extracted), "--out", str(out)],
        env=ttyrun.cli_env(),
    )
    assert shown.returncode == 0, shown.tty
    screen = plain(shown.tty)
    assert "\x1b[" in shown.tty and "━" in screen  # a drawn bar, not lines of text
    assert re.search(r"train images .*240/240 .*MiB", screen), screen
    assert re.search(r"val images .*40/40", screen) and "ETA" in screen
    assert "done: " in screen  # the messages still show, above the bars
    # stdout (piped here) holds the summary for people, no bar and no escape code
    assert shown.stdout.startswith(f"complete: {out}") and "\x1b" not in shown.stdout
    assert "train: 240 images" in shown.stdout

    deep = ttyrun.run_on_tty(["prep", "verify", str(out), "--checksums"], env=ttyrun.cli_env())
    assert deep.returncode == 0, deep.tty
    screen = plain(deep.tty)
    assert re.search(r"train records .*240/240", screen), screen
    assert re.search(r"checksums .*6/6 .*MiB", screen), screen
    assert deep.stdout.rstrip().endswith("ok")


def test_prep_piped_prints_plain_lines_and_json_one_document(
    synthetic: SyntheticSet, tmp_path: Path
) -> None:
    done = piped("prep", "imagenet", "--raw", synthetic.tars, "--out", tmp_path / "a")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "━" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) <= 8, lines  # a few lines, not one per chunk
    assert any(line.startswith("train: packing 240 images") for line in lines)
    assert lines[-1].startswith("done: ")

    # --json on a terminal: no bar on stderr, one JSON document alone on stdout
    shown = ttyrun.run_on_tty(
        ["prep", "imagenet", "--raw", str(synthetic.tars), "--out", str(tmp_path / "b"), "--json"],
        env=ttyrun.cli_env(),
    )
    assert shown.returncode == 0, shown.tty
    assert "━" not in shown.tty and "\x1b[" not in shown.tty
    summary = json.loads(shown.stdout)
    assert summary["status"] == "complete" and summary["splits"]["train"]["images"] == 240
    checked = ttyrun.run_on_tty(
        ["prep", "verify", str(tmp_path / "b"), "--checksums", "--json"], env=ttyrun.cli_env()
    )
    assert checked.returncode == 0 and "━" not in checked.tty
    assert json.loads(checked.stdout)["checksums_checked"] is True


def _campaign(tmp_path: Path, name: str) -> dict[str, str]:
    """A local campaign of two runs replaying a real r2.1 log over about 4 s each."""
    site = make_site(tmp_path / name, env={"FAKE_TRAIN_SLEEP": "4"})
    env = campaign_env(tmp_path)
    hpcrepro(
        "submit", *SYSTEM, "--site", str(site), "--runs", "2", "--name", name,
        "--set", "nodes=1", "--set", "gpus_per_node=1", "--backend", "local", env=env,
    )  # fmt: skip
    return env


def test_status_watch_live_on_a_terminal_and_changes_only_when_piped(tmp_path: Path) -> None:
    env = _campaign(tmp_path, "live")
    shown = ttyrun.run_on_tty(
        ["status", "live", "--watch"], env=ttyrun.cli_env(env), tty_stdout=True, tty_stderr=False
    )
    assert shown.returncode == 0, shown.tty + shown.stderr
    screen = plain(shown.tty)
    assert "\x1b[1A" in shown.tty  # redrawn in place (cursor up), not printed again below
    for head in ("run", "epoch", "accuracy", "elapsed", "ETA"):
        assert head in screen
    # a run seen while it ran: epoch of the r2.1 budget (35), accuracy against 0.759, an ETA
    running = r"live 0[12] +running +\d+/35 .*?0\.\d{4}/0\.759 +\d:\d\d:\d\d +\d:\d\d:\d\d"
    assert re.search(running, screen), screen
    assert re.search(r"live 02 +valid +35/35 .*0\.7592/0\.759", screen), screen
    assert "runs: 2/2 valid" in screen

    env = _campaign(tmp_path, "pipe")
    done = hpcrepro("status", "pipe", "--watch", env=env, timeout=120)
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout and "(updated" not in done.stdout
    assert len(lines) == len(set(lines)), lines  # changes only: nothing said twice
    assert "pipe run-01 running (job local:" in done.stdout
    assert any(re.fullmatch(r"pipe run 0[12] running epoch \d+/35 acc 0\.\d{4}/0\.759 .*", x)
               for x in lines), lines  # fmt: skip
    assert "pipe run 02 valid epoch 35/35 acc 0.7592/0.759" in done.stdout
    assert any(line.startswith("pipe collect completed (job local:pipe.") for line in lines)
    assert "pipe  runs: 2/2 valid, 0 to come, 0 lost" in lines


@pytest.mark.slow
def test_image_build_numbers_its_steps(tmp_path: Path) -> None:
    """A real enroot build of NVIDIA's code on a terminal: every step, the Dockerfile's own
    included, says where the build is (piped: test_image_build's enroot build)."""
    enroot = enroot_program()
    env = ttyrun.cli_env(enroot_env(tmp_path, enroot))
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(SHAPE)
    args = [
        "image", "build", "--system", "dgxh100_8x8", "--version", "r4.0", "--code", str(code()),
        "--dockerfile", str(dockerfile), "--base", str(debian_base() / "base.sqsh"),
        "--builder", "enroot", "-o", str(tmp_path / "rn50.sqsh"),
    ]  # fmt: skip
    shown = ttyrun.run_on_tty(args, env=env, tty_stdout=False, tty_stderr=True, timeout=600)
    assert shown.returncode == 0, shown.tty[-3000:]
    screen = plain(shown.tty)
    assert "\x1b[" in shown.tty  # drawn in colour on the terminal
    for step in (
        r"\[1/4\] checking \S+ against \S+@\w+:\S*NVIDIA",
        r"\[2/4\] staging the code",
        r"\[3/4\] building rn50\.sqsh with enroot",
        r"  \[1/6\] Dockerfile line 3 \(RUN echo",
        r"  \[6/6\] Dockerfile line 8 \(RUN test -x",
        r"\[4/4\] recording the build",
    ):
        assert re.search(step + r".*\(\d+:\d\d:\d\d\)", screen), (step, screen[-3000:])
    assert shown.stdout.strip() == str(tmp_path / "rn50.sqsh")
