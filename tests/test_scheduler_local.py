"""The local backend under faults: a runner killed between starting a job and recording it, and
`cancel` of jobs that ignore SIGTERM, escape their process group, or cannot be killed at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from campaign_helpers import (
    SYSTEM,
    all_finished,
    cli_env,
    hpcrepro,
    make_site,
    stage,
    status_json,
    wait_for,
)
from hpcrepro.campaign import runner
from hpcrepro.scheduler import local

LOCAL = ["--set", "nodes=1", "--set", "gpus_per_node=1", "--backend", "local"]

# A training task that is hard to stop; it records every pid it makes in $STUBBORN_DIR.
STUBBORN = """
import os, signal, subprocess, sys, time
marks = os.environ["STUBBORN_DIR"]
def note(pid, what):
    with open(os.path.join(marks, f"{what}-{pid}"), "w") as out:
        out.write(str(pid))
if os.environ.get("STUBBORN_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("STUBBORN_DAEMON"):  # leaves the job's process group and session
    note(subprocess.Popen(["sleep", "300"], start_new_session=True).pid, "daemon")
if os.environ.get("STUBBORN_FOREIGN"):  # becomes another user, whom the canceller may not kill
    note(subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "sleep", "300"]).pid, "foreign")
note(os.getpid(), "task")
time.sleep(300)
"""


def _stubborn_site(tmp_path: Path, **flags: str) -> tuple[Path, Path]:
    marks = tmp_path / "marks"
    marks.mkdir()
    task = tmp_path / "stubborn.py"
    task.write_text(STUBBORN)
    site = make_site(tmp_path, env={"STUBBORN_DIR": str(marks), **flags},
                     train_command=f"{sys.executable} {task}")  # fmt: skip
    return site, marks


def _pids(marks: Path, what: str) -> list[int]:
    return [int(p.read_text()) for p in marks.glob(f"{what}-*")]


def _job_id(campaign: Path, name: str) -> str:
    manifest = json.loads((campaign / "campaign.json").read_text())
    return next(s for s in manifest["stages"] if s["name"] == name)["jobs"][-1]["job_id"]


# --- a runner killed between starting a job and recording its pid


@pytest.mark.parametrize("point", ["run-01", "run-01:recorded"])
def test_a_job_whose_runner_died_before_recording_it_never_runs(tmp_path: Path, point: str) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "gate",
             env=env | {runner.CRASH_HOOK: point})  # fmt: skip
    campaign = tmp_path / "logs" / "gate"
    job_id = _job_id(campaign, "run-01")
    first = wait_for(lambda: (s := status_json("gate", env)) and
                     stage(s, "run-01")["state"] != "running" and s, 60,
                     "the runner's death to show")  # fmt: skip
    assert stage(first, "run-01")["state"] == "failed"
    wait_for(lambda: not local.job_processes(job_id), 30, "the gated job to end")
    time.sleep(1)
    assert not (campaign / "logs" / "run-01.log").exists()  # its script never ran
    assert "submitted run-02, collect" in hpcrepro("resume", "gate", env=env).stdout
    final = wait_for(all_finished("gate", env), 90, "the resumed campaign")
    assert final["runs"]["valid"] == 1
    assert not (campaign / "logs" / "run-01.log").exists()  # still: never two trainings


# --- cancel: SIGTERM, then SIGKILL, and what survives is said


def test_cancel_kills_tasks_that_ignore_sigterm_or_left_the_group(tmp_path: Path) -> None:
    site, marks = _stubborn_site(tmp_path, STUBBORN_IGNORE_TERM="1", STUBBORN_DAEMON="1")
    env = cli_env(tmp_path) | {local.GRACE_ENV: "2"}
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "2", *LOCAL, "--name", "mule",
             env=env)  # fmt: skip
    wait_for(lambda: _pids(marks, "task") and _pids(marks, "daemon"), 60, "the task to start")
    pids = _pids(marks, "task") + _pids(marks, "daemon")
    done = hpcrepro("cancel", "mule", env=env)
    assert "cancelled 3 job(s)" in done.stdout
    assert "ignored SIGTERM for 2 s and were killed with SIGKILL" in done.stdout
    wait_for(lambda: not any(local.pid_alive(pid) for pid in pids), 30, "every task to end")
    status = status_json("mule", env)
    assert [row["state"] for row in status["stages"]] == ["cancelled"] * 3
    assert "submitted" in hpcrepro("resume", "mule", env=env | {local.GRACE_ENV: "2"}).stdout
    hpcrepro("cancel", "mule", env=env)  # the replacements are stubborn too


def test_cancel_reports_a_process_that_survives_sigkill(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("this test needs root and setpriv (util-linux) under CI")
        pytest.skip("a process the canceller may not kill needs root and setpriv to arrange")
    # the foreign task ignores SIGTERM too (inherited), so that the runner's own relay of the
    # SIGTERM (the runner may signal it) cannot end it either
    site, marks = _stubborn_site(tmp_path, STUBBORN_FOREIGN="1", STUBBORN_IGNORE_TERM="1")
    env = cli_env(tmp_path) | {local.GRACE_ENV: "1"}
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "tough",
             env=env)  # fmt: skip
    wait_for(lambda: _pids(marks, "task") and _pids(marks, "foreign"), 60, "the task to start")
    (foreign,) = _pids(marks, "foreign")
    wait_for(lambda: _owner(foreign) == 65534, 30, "the foreign task to change user")
    try:
        # a canceller without CAP_KILL may not signal another user's process
        weak = ["setpriv", "--bounding-set=-kill", sys.executable, "-m", "hpcrepro"]
        done = subprocess.run([*weak, "cancel", "tough"], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "still running after SIGKILL: local:" in done.stdout
        assert f"pid {foreign} sleep" in done.stdout and "another user's" in done.stdout
        assert stage(status_json("tough", env), "run-01")["state"] == "running"  # not a lie
        again = hpcrepro("cancel", "tough", env=env)  # with CAP_KILL it ends
        assert "cancelled 1 job(s)" in again.stdout
        wait_for(lambda: not local.pid_alive(foreign), 30, "the foreign task to end")
    finally:
        if local.pid_alive(foreign):
            os.kill(foreign, 9)


def _owner(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1
