"""A Slurm controller that stops answering (slurmctld stopped with SIGSTOP) in the middle of a
submit and during status. A timeout is no refusal: the job sbatch sent may exist, and is adopted
by its name; status says Slurm did not answer instead of showing old states as current.

The controller is stopped only inside `frozen`, which always lets it run again (and a watchdog
process does even if this test process dies); clients get MessageTimeout=3 from a copy of
slurm.conf, so each unanswered call costs seconds, not the cluster's 20.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from campaign_helpers import SYSTEM, all_finished, cli_env, hpcrepro, make_site, stage, wait_for
from hpcrepro.campaign import layout
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.scheduler.slurm import PATIENCE_ENV
from test_slurm_campaign import ONE_NODE, _conf_with, _jobs_of

pytestmark = pytest.mark.slurm
WATCHDOG_S = 180  # the controller runs again after this long whatever happens here


class Controller:
    """The test cluster's slurmctld, to stop and let run again."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)


@pytest.fixture
def frozen(slurm_cluster) -> Iterator[Controller]:
    pid = int((slurm_cluster.conf.parent.parent / "run" / "slurmctld.pid").read_text())
    watchdog = subprocess.Popen(["sh", "-c", f"sleep {WATCHDOG_S}; kill -CONT {pid}"],
                                start_new_session=True)  # fmt: skip
    controller = Controller(pid)
    try:
        yield controller
    finally:
        controller.resume()
        watchdog.kill()
        watchdog.wait()
        wait_for(lambda: subprocess.run(["scontrol", "ping"], env=slurm_cluster.env,
                                        capture_output=True, text=True).stdout.count(" is UP"),
                 60, "the controller to answer again")  # fmt: skip


def _stalling_sbatch(tmp_path: Path, controller: Controller, at_call: int) -> tuple[str, Path]:
    """A PATH entry whose `sbatch` stops the controller right before the real sbatch sends its
    `at_call`-th submission (--test-only calls do not count); and the file it touches then."""
    real = shutil.which("sbatch")
    assert real is not None
    folder = tmp_path / "shim"
    folder.mkdir()
    stopped = tmp_path / "stopped"
    count = tmp_path / "count"
    (folder / "sbatch").write_text(
        "#!/bin/bash\n"
        'if [ "$1" = --parsable ]; then\n'
        f"    n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n"
        f"    if [ $n -eq {at_call} ]; then kill -STOP {controller.pid}; touch {stopped}; fi\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    (folder / "sbatch").chmod(0o755)
    return str(folder), stopped


def _unreachable_sbatch(slurm_cluster, tmp_path: Path, at_call: int) -> str:
    """A PATH entry whose `sbatch` sends its `at_call`-th submission to a port nobody listens
    on: "Unable to contact slurm controller", and certainly no job."""
    real = shutil.which("sbatch")
    assert real is not None
    dead = _conf_with(slurm_cluster, tmp_path, "dead.conf", SlurmctldPort="1",
                      MessageTimeout="3")["SLURM_CONF"]  # fmt: skip
    folder = tmp_path / "shim"
    folder.mkdir()
    count = tmp_path / "count"
    (folder / "sbatch").write_text(
        "#!/bin/bash\n"
        'if [ "$1" = --parsable ]; then\n'
        f"    n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n"
        f"    if [ $n -eq {at_call} ]; then export SLURM_CONF={dead}; fi\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    (folder / "sbatch").chmod(0o755)
    return str(folder)


def _env(slurm_cluster, tmp_path: Path, shim: str, patience: float) -> dict[str, str]:
    quick = _conf_with(slurm_cluster, tmp_path, "quick.conf", MessageTimeout="3")
    env = cli_env(tmp_path, quick)
    env["PATH"] = f"{shim}:{env['PATH']}"
    env[PATIENCE_ENV] = str(patience)
    return env


def _resume_after(controller: Controller, stopped: Path, seconds: float) -> threading.Thread:
    def later() -> None:
        wait_for(stopped.exists, 120, "the controller to be stopped")
        time.sleep(seconds)
        controller.resume()

    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    return thread


def _submit(site: Path, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "4", "--name", name,
                    *ONE_NODE, env=env, check=False, timeout=300)  # fmt: skip


ALL_JOBS = ["collect.1", "run-01.1", "run-02.1", "run-03.1", "run-04.1"]


def test_a_stall_mid_submit_is_waited_out_and_the_job_adopted(
    slurm_cluster, frozen: Controller, tmp_path: Path
) -> None:
    shim, stopped = _stalling_sbatch(tmp_path, frozen, at_call=3)
    env = _env(slurm_cluster, tmp_path, shim, patience=90)
    waiter = _resume_after(frozen, stopped, 8)  # longer than sbatch's own timeout
    done = _submit(make_site(tmp_path), "stall", env)
    waiter.join(60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "refused" not in done.stderr + done.stdout
    assert "submitted 5 job(s)" in done.stdout
    assert _jobs_of(slurm_cluster.env, tmp_path, "stall") == ALL_JOBS  # run-03 once, adopted
    final = wait_for(all_finished("stall", cli_env(tmp_path, slurm_cluster.env)), 120,
                     "the campaign")  # fmt: skip
    assert final["runs"]["valid"] == 4


def test_a_submission_that_never_reached_slurm_is_made_once_more(
    slurm_cluster, tmp_path: Path
) -> None:
    shim = _unreachable_sbatch(slurm_cluster, tmp_path, at_call=2)
    env = _env(slurm_cluster, tmp_path, shim, patience=60)
    done = _submit(make_site(tmp_path), "lost", env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "submitted 5 job(s)" in done.stdout
    assert _jobs_of(slurm_cluster.env, tmp_path, "lost") == ALL_JOBS  # run-02 made once
    final = wait_for(all_finished("lost", cli_env(tmp_path, slurm_cluster.env)), 120,
                     "the campaign")  # fmt: skip
    assert final["runs"]["valid"] == 4


def test_a_stall_past_patience_says_what_is_known_and_resume_adopts_it(
    slurm_cluster, frozen: Controller, tmp_path: Path
) -> None:
    shim, stopped = _stalling_sbatch(tmp_path, frozen, at_call=3)
    env = _env(slurm_cluster, tmp_path, shim, patience=6)
    done = _submit(make_site(tmp_path), "long", env)
    assert stopped.exists()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    text = done.stderr
    assert "refused" not in text and "fix the site file" not in text
    assert "Slurm did not answer while run-03 of campaign long was submitted" in text
    assert "queued: 2 job(s) (run-01 " in text
    assert "not known: whether Slurm created run-03" in text
    assert "not submitted: run-04, collect" in text
    assert "`hpcrepro resume long` adopts run-03 if it exists" in text
    saved = manifest_io.load(layout.CampaignPaths(tmp_path / "logs" / "long").manifest)
    assert [s.state for s in saved.stages][2:] == ["submitting"] * 3

    frozen.resume()  # the request sbatch sent is processed now: run-03 exists
    plain = cli_env(tmp_path, slurm_cluster.env)
    wait_for(lambda: "run-03.1" in _jobs_of(slurm_cluster.env, tmp_path, "long"), 60,
             "the request sent during the stall to make its job")  # fmt: skip
    hpcrepro("resume", "long", env=plain)
    assert _jobs_of(slurm_cluster.env, tmp_path, "long") == ALL_JOBS  # nothing doubled
    final = wait_for(all_finished("long", plain), 120, "the campaign")
    assert final["runs"]["valid"] == 4


def test_status_says_when_slurm_does_not_answer(
    slurm_cluster, frozen: Controller, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    site = make_site(tmp_path, env={"FAKE_TRAIN_HOLD": str(hold)})
    plain = cli_env(tmp_path, slurm_cluster.env)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", "--name", "mute", *ONE_NODE,
             env=plain)  # fmt: skip
    wait_for(lambda: json.loads(hpcrepro("status", "mute", "--json", env=plain).stdout)[0]
             ["stages"][0]["state"] == "running", 60, "run-01 to run")  # fmt: skip
    checked = manifest_io.load(tmp_path / "logs" / "mute" / "campaign.json").states_checked
    quick = cli_env(tmp_path, _conf_with(slurm_cluster, tmp_path, "quick.conf",
                                         MessageTimeout="3"))  # fmt: skip
    frozen.stop()
    try:
        text = hpcrepro("status", "mute", env=quick, check=False, timeout=120)
        as_json = hpcrepro("status", "--json", env=quick, check=False, timeout=120)
    finally:
        frozen.resume()
    for done in (text, as_json):
        assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
        assert "note: campaign mute: Slurm did not answer (the Slurm controller did not " in (
            done.stderr
        )
        assert f"show their state as last known, at {checked}" in done.stderr
    assert f"Slurm did not answer: 2 job(s) show their state as last known, at {checked}" in (
        text.stdout
    )
    (shown,) = json.loads(as_json.stdout)
    assert shown["states_known"] is False and len(shown["states_unknown"]) == 2
    assert stage(shown, "run-01")["state"] == "running"  # the last known, said to be so
    again = hpcrepro("status", "mute", "--json", env=plain)
    assert json.loads(again.stdout)[0]["states_known"] is True
    hold.unlink()
    wait_for(all_finished("mute", plain), 90, "the campaign")
