"""Campaign state as an attacker (or a careless hand) leaves it: a manifest edited to run another
script, adopt another campaign's jobs or signal a bystander's pid; a FIFO where a job's exit file
or log belongs; a campaign folder planted in a shared log_dir; a submit killed half-way. Each
ends in a clear refusal or a campaign that finishes; nothing named by the state file runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
from hpcrepro.campaign import actions, layout
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.scheduler import local

LOCAL = ["--set", "nodes=1", "--set", "gpus_per_node=1", "--backend", "local"]


def _evil(tmp_path: Path) -> tuple[Path, Path]:
    """A script that leaves a mark when it runs, and where that mark would be."""
    mark = tmp_path / "PWNED"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/bash\ntouch {mark}\n")
    script.chmod(0o755)
    return script, mark


def _finished_local(tmp_path: Path, name: str, runs: int = 1) -> tuple[dict[str, str], Path]:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", str(runs), *LOCAL, "--name", name,
             env=env)  # fmt: skip
    wait_for(all_finished(name, env), 90, f"campaign {name}")
    return env, tmp_path / "logs" / name


def _edit(campaign: Path, change: Any) -> None:
    path = campaign / "campaign.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _lose_run_01(data: dict[str, Any]) -> None:
    """Make run-01 look failed so that `resume` has something to submit."""
    data["stages"][0]["jobs"][0]["state"] = "failed"
    data["stages"][0]["verdicts"]["1"]["verdict"] = "void"


# --- a manifest edited by hand runs only what hpcrepro wrote


def test_a_stage_script_the_manifest_names_elsewhere_is_refused(tmp_path: Path) -> None:
    env, campaign = _finished_local(tmp_path, "edited")
    evil, mark = _evil(tmp_path)
    saved = (campaign / "campaign.json").read_text()
    for script in (
        "../../evil.sh",
        str(evil),
        "scripts/../../evil.sh",
        "scripts/collect.sbatch",
        "scripts/run-01.sh",
        "scripts//run-01.sbatch",
    ):
        (campaign / "campaign.json").write_text(saved)

        def change(data: dict[str, Any], script: str = script) -> None:
            _lose_run_01(data)
            data["stages"][0]["script"] = script

        _edit(campaign, change)
        for command in ("resume", "cancel"):
            done = hpcrepro(command, "edited", env=env, check=False)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            assert "damaged manifest: stages[0].script should be 'scripts/run-01.sbatch'" in (
                done.stderr
            )
    time.sleep(1)
    assert not mark.exists()


def test_a_stage_script_replaced_by_a_link_is_not_run(tmp_path: Path) -> None:
    evil, mark = _evil(tmp_path)
    hold = tmp_path / "hold"
    hold.write_text("")
    site = make_site(tmp_path, env={"FAKE_TRAIN_HOLD": str(hold)})
    env = cli_env(tmp_path)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "linked",
             env=env)  # fmt: skip
    wait_for(lambda: "epoch 1" in stage(status_json("linked", env), "run-01")["note"], 60,
             "run-01 to hold")  # fmt: skip
    collect = tmp_path / "logs" / "linked" / "scripts" / "collect.sbatch"
    collect.unlink()
    collect.symlink_to(evil)  # swapped while the campaign runs: the runner checks it again
    hold.unlink()
    final = wait_for(all_finished("linked", env), 90, "the campaign")
    assert stage(final, "collect")["state"] == "failed"
    assert (
        "refusing to run the script of stage collect: it is a link"
        in (stage(final, "collect")["note"])
    )
    resumed = hpcrepro("resume", "linked", env=env, check=False)  # plans collect again
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "refusing to run the script of stage collect: it is a link" in resumed.stderr
    time.sleep(1)
    assert not mark.exists()


def test_a_token_or_local_job_id_of_another_campaign_is_refused(tmp_path: Path) -> None:
    """A token is the job name under which Slurm jobs are adopted or cancelled as extras; a
    local job id is the mark whose processes a local cancel stops."""
    env, campaign = _finished_local(tmp_path, "tokens")
    saved = (campaign / "campaign.json").read_text()
    for key, value, message in (
        ("token", "hpcrepro.other.abcdef.run-01.1", "token should be 'hpcrepro.tokens."),
        ("job_id", "local:other.abcdef.run-01.1", "job_id should be 'local:tokens."),
    ):
        (campaign / "campaign.json").write_text(saved)
        _edit(campaign, lambda data, k=key, v=value: data["stages"][0]["jobs"][0].update({k: v}))
        for command in ("resume", "cancel"):
            done = hpcrepro(command, "tokens", env=env, check=False)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            assert f"stages[0].jobs[0].{message}" in done.stderr


def _bystander() -> subprocess.Popen[bytes]:
    """A process of this user that belongs to no campaign, in a process group of its own."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


@pytest.mark.parametrize("where", ["job", "runner"])
def test_a_pid_edited_into_the_manifest_is_never_signalled(tmp_path: Path, where: str) -> None:
    env, campaign = _finished_local(tmp_path, "pids")
    other = _bystander()
    try:
        start = local.process_start(other.pid)  # all an attacker needs to match it

        def change(data: dict[str, Any]) -> None:
            job = data["stages"][0]["jobs"][0]
            job.update(state="running", end=None)
            if where == "job":
                job.update(pid=other.pid, pid_start=start)
            else:
                data["local_runner"] = {
                    "pid": other.pid,
                    "start": start,
                    "host": os.uname().nodename,
                }

        _edit(campaign, change)
        done = hpcrepro("cancel", "pids", env=env, check=False)
        assert "Traceback" not in done.stderr, done.stderr
        time.sleep(0.5)
        assert other.poll() is None, "cancel signalled a process that is no job of the campaign"
        row = stage(status_json("pids", env), "run-01")
        assert row["state"] != "running"  # its end is read from its exit file, not the pid
    finally:
        other.kill()
        other.wait()


def test_an_exit_file_or_log_that_is_a_fifo_does_not_hang_status(tmp_path: Path) -> None:
    env, campaign = _finished_local(tmp_path, "fifo")
    fifo = tmp_path / "elsewhere.fifo"
    os.mkfifo(fifo)
    data = json.loads((campaign / "campaign.json").read_text())
    job = data["stages"][0]["jobs"][0]
    paths = layout.CampaignPaths(campaign)
    _, exit_file = paths.job_files("run-01", job["job_id"])
    exit_file.unlink()
    os.mkfifo(exit_file)  # where the exit status is read now
    log = paths.run_log(1)
    log.unlink()
    os.mkfifo(log)

    def change(data: dict[str, Any]) -> None:
        # an older manifest named the exit file itself: the name is ignored now
        data["stages"][0]["jobs"][0].update(state="running", exit_file=str(fifo), pid=4_000_000)
        data["stages"][0]["verdicts"] = {}

    _edit(campaign, change)
    for args in (
        ["status", "fifo"],
        ["status", "fifo", "--json"],
        ["status"],
        ["status", "fifo", "--watch"],
        ["cancel", "fifo"],
    ):
        done = hpcrepro(*args, env=env, check=False, timeout=60)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, (args, done.stderr)
    assert stage(status_json("fifo", env), "run-01")["state"] == "failed"


# --- a campaign folder is written only where hpcrepro made it


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine\n")
    return victim


def _plant(folder: Path, victim: Path) -> None:
    """What another user of a shared log_dir can prepare at the default campaign name."""
    folder.mkdir(parents=True)
    (folder / "scripts").symlink_to(victim)
    (folder / "resolved-config.json").symlink_to(victim / "notes.txt")
    (folder / "logs").mkdir()
    (folder / "logs" / "run-01.log").symlink_to(victim / "run.log")


@pytest.mark.parametrize("planted", ["links", "link", "file", "foreign-dry-run"])
def test_a_folder_found_at_the_campaign_name_receives_nothing(tmp_path: Path, planted: str) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    victim = _victim(tmp_path)
    target = tmp_path / "logs" / "dgxa100_1x8-r2.1"  # the default name: easy to guess
    if planted == "links":
        _plant(target, victim)
    elif planted == "link":
        target.symlink_to(victim)
    elif planted == "file":
        target.write_text("x")
    else:  # a dry run's folder, but another user's
        target.mkdir()
        (target / ".hpcrepro-dry-run").write_text("")
        os.chown(target / ".hpcrepro-dry-run", 65534, 65534)
        os.chown(target, 65534, 65534)
    before = sorted((p.name, p.read_bytes()) for p in victim.iterdir())
    done = hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, env=env,
                    check=False)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"the campaign folder {target}" in done.stderr and "--name" in done.stderr
    assert sorted((p.name, p.read_bytes()) for p in victim.iterdir()) == before
    assert not [p for p in target.parent.iterdir() if "~" in p.name]  # nothing left beside it
    assert not (tmp_path / "state" / "campaigns" / "dgxa100_1x8-r2.1").exists()


def test_a_dry_run_folder_is_replaced_whole_by_the_submit(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    victim = _victim(tmp_path)
    submit = ["submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "dry"]
    hpcrepro(*submit, "--dry-run", env=env)
    folder = tmp_path / "logs" / "dry"
    assert (folder / "scripts" / "run-01.sbatch").is_file()
    assert not (folder / "campaign.json").exists()
    (folder / "logs" / "run-01.log").symlink_to(victim / "notes.txt")  # planted after review
    hpcrepro(*submit, env=env)
    final = wait_for(all_finished("dry", env), 90, "the campaign")
    assert final["runs"]["valid"] == 1
    assert (victim / "notes.txt").read_text() == "mine\n"
    assert not (folder / "logs" / "run-01.log").is_symlink()
    assert not (folder / ".hpcrepro-dry-run").exists()
    assert not [p for p in folder.parent.iterdir() if "~" in p.name]


def test_an_empty_folder_at_the_name_is_taken_over(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    (tmp_path / "logs" / "empty").mkdir()
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "empty",
             env=env)  # fmt: skip
    assert wait_for(all_finished("empty", env), 90, "the campaign")["runs"]["valid"] == 1


# --- a submit killed before its campaign folder was complete


@pytest.mark.parametrize("point", ["partial", "scripts", "manifest"])
def test_a_submit_killed_early_is_found_and_resume_finishes_it(tmp_path: Path, point: str) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    submit = ["submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "cut"]
    killed = hpcrepro(*submit, env=env | {actions.CRASH_HOOK: point}, check=False)
    assert killed.returncode == 75
    assert not (tmp_path / "logs" / "cut").exists()  # no campaign without a manifest appears

    one = hpcrepro("status", "cut", env=env, check=False)
    assert one.returncode == 1 and "Traceback" not in one.stderr, one.stderr
    assert "campaign cut is half-made: its submit was interrupted before any job was" in one.stdout
    assert "`hpcrepro resume cut` finishes" in one.stdout
    every = hpcrepro("status", env=env, check=False)
    assert every.returncode == 1 and "warning: campaign cut is half-made" in every.stderr

    resumed = hpcrepro("resume", "cut", env=env)
    assert "campaign cut:" in resumed.stdout and "submitted" in resumed.stdout
    final = wait_for(all_finished("cut", env), 90, "the finished campaign")
    assert final["runs"]["valid"] == 1
    assert [row["attempts"] for row in final["stages"]] == [1, 1]  # nothing ran twice
    assert not [p for p in (tmp_path / "logs").iterdir() if "~" in p.name]


def test_cancel_removes_a_half_made_campaign_and_submit_starts_afresh(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    submit = ["submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "gone"]
    hpcrepro(*submit, env=env | {actions.CRASH_HOOK: "scripts"}, check=False)
    out = hpcrepro("cancel", "gone", env=env).stdout
    assert "removed what its interrupted submit left" in out
    assert not [p for p in (tmp_path / "logs").iterdir() if "gone" in p.name]
    assert "no campaign 'gone'" in hpcrepro("status", "gone", env=env, check=False).stderr
    # a submit of the same name after another killed one cleans up and starts afresh
    hpcrepro(*submit, env=env | {actions.CRASH_HOOK: "manifest"}, check=False)
    hpcrepro(*submit, env=env)
    assert wait_for(all_finished("gone", env), 90, "the new campaign")["runs"]["valid"] == 1
    assert not [p for p in (tmp_path / "logs").iterdir() if "~" in p.name]


def test_a_submit_in_progress_is_not_called_half_made(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    submit = ["submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, "--name", "busy"]
    hpcrepro(*submit, env=env | {actions.CRASH_HOOK: "partial"}, check=False)
    code = (
        "import sys, time; from hpcrepro.campaign import layout, manifest as m\n"
        "with m.locked(layout.name_lock('busy')):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        done = hpcrepro("status", "busy", env=env, check=False)
        assert done.returncode == 0 and "is being submitted right now" in done.stdout
        refused = hpcrepro("resume", "busy", env=env, check=False)
        assert refused.returncode == 2 and "being submitted right now" in refused.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(30)
    assert "half-made" in hpcrepro("status", "busy", env=env, check=False).stdout


def test_a_killed_submit_leaves_a_campaign_or_a_half_made_one_never_less(tmp_path: Path) -> None:
    """SIGKILL at a moment chosen by the clock, not by a fault point."""
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    submit = [sys.executable, "-m", "hpcrepro", "submit", *SYSTEM, "--site", str(site),
              "--runs", "1", *LOCAL, "--name", "clock"]  # fmt: skip
    process = subprocess.Popen(submit, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    logs = tmp_path / "logs"
    wait_for(lambda: process.poll() is not None or any("clock" in p.name for p in logs.iterdir()),
             60, "the submit to start writing")  # fmt: skip
    process.kill()
    process.wait()
    done = hpcrepro("status", "clock", env=env, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode == 2:  # killed before it registered the name: nothing to find, or clean
        assert "no campaign 'clock'" in done.stderr
        hpcrepro(*submit[3:], env=env)
    else:  # a half-made campaign (resume finishes it) or a complete one (resume submits the rest)
        assert done.returncode in (0, 1)
        hpcrepro("resume", "clock", env=env)
    final = wait_for(all_finished("clock", env), 90, "the campaign")
    assert final["runs"]["valid"] == 1
    manifest = manifest_io.load(logs / "clock" / "campaign.json")
    assert all(len(item.jobs) == 1 for item in manifest.stages), manifest.stages
    assert manifest.by_name()["run-01"].jobs[0].state == "completed"


# --- the local backend refuses what it cannot run


def test_local_backend_refuses_pyxis_up_front(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    text = site.read_text().replace("runtime: none\n", "")  # the default: pyxis
    site.write_text(text + "image: nvcr.io/nvidia/mxnet:23.04-py3\n")
    env = cli_env(tmp_path)
    for extra in ([], ["--set", "runtime=pyxis"]):
        done = hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, *extra,
                        env=env, check=False)  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "the local backend cannot use runtime 'pyxis'" in done.stderr
        assert "pyxis is a Slurm plugin" in done.stderr and "--set runtime=none" in done.stderr
    assert "from default" in done.stderr or "--set" in done.stderr
    assert list((tmp_path / "logs").iterdir()) == []


def test_local_backend_refuses_apptainer_when_it_is_not_installed(tmp_path: Path) -> None:
    site = make_site(tmp_path, image="/images/x.sif")
    site.write_text(site.read_text().replace("runtime: none", "runtime: apptainer"))
    env = cli_env(tmp_path) | {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    if any(Path(folder, "apptainer").exists() for folder in env["PATH"].split(":")):
        pytest.skip("apptainer is installed here: the refusal is for machines without it")
    done = hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL, env=env,
                    check=False)  # fmt: skip
    assert done.returncode == 2 and "needs the `apptainer` command" in done.stderr, done.stderr


def test_a_jobs_folder_replaced_by_a_link_receives_no_output(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    hold = tmp_path / "hold"
    hold.write_text("")
    site = make_site(tmp_path, env={"FAKE_TRAIN_HOLD": str(hold)})
    env = cli_env(tmp_path)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "2", *LOCAL, "--name", "jobs",
             env=env)  # fmt: skip
    wait_for(lambda: "epoch 1" in stage(status_json("jobs", env), "run-01")["note"], 60,
             "run-01 to hold")  # fmt: skip
    jobs = tmp_path / "logs" / "jobs" / "jobs"
    jobs.rename(jobs.with_name("jobs.moved"))
    jobs.symlink_to(victim)  # while run-01 runs: its exit status and the next outputs go where?
    hold.unlink()
    final = wait_for(all_finished("jobs", env), 90, "the campaign")
    assert stage(final, "run-01")["state"] == "completed"  # its status went into its own file
    assert stage(final, "run-02")["state"] == "failed"
    saved = manifest_io.load(tmp_path / "logs" / "jobs" / "campaign.json")
    assert "cannot be written" in (saved.by_name()["run-02"].jobs[0].reason or "")
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]
