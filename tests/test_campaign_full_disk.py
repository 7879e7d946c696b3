"""A full file system under log_dir (a real small tmpfs): submit, status (one campaign, all of
them, --json, --watch) and cancel end in a clear message, never an OSError traceback, and cancel
still stops the jobs and records it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from campaign_helpers import SYSTEM, cli_env, hpcrepro, make_site, stage, status_json, wait_for
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.scheduler import local
from mounts import small_filesystem

LOCAL = ["--set", "nodes=1", "--set", "gpus_per_node=1", "--backend", "local"]
NO_SPACE = "No space left on device"


def _fill(folder: Path) -> None:
    """Write into `folder` until its file system has not one byte left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


def _held(root: Path, name: str, env: dict[str, str], hold: Path, *backend: str) -> Path:
    """A campaign of two runs whose run-01 holds after its first epoch (while `hold` exists),
    in the log folder `root/logs`; its folder."""
    hold.write_text("")
    site = make_site(root / name, env={"FAKE_TRAIN_HOLD": str(hold)}, log_dir=str(root / "logs"))
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "2", *backend, "--name", name,
             env=env)  # fmt: skip
    wait_for(lambda: "epoch 1" in stage(status_json(name, env), "run-01")["note"], 90,
             f"{name}'s run-01 to hold")  # fmt: skip
    return root / "logs" / name


@contextlib.contextmanager
def _reaped(logs: Path) -> Iterator[None]:
    """Kill, at the end, every process of the campaigns in `logs` (so the tmpfs can go)."""
    try:
        yield
    finally:
        ids = set()
        for manifest in logs.glob("*/campaign.json"):
            data = json.loads(manifest.read_text())
            ids |= {job["job_id"] for s in data["stages"] for job in s["jobs"] if job["job_id"]}
            runner = data.get("local_runner") or {}
            if local.pid_alive(runner.get("pid")) and local._marks(
                runner["pid"], local.RUNNER_MARK
            ):
                os.kill(runner["pid"], signal.SIGKILL)
        for job_id, pids in local.marked_processes(local.JOB_MARK).items():
            for pid in pids if job_id in ids else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: not set(local.marked_processes(local.JOB_MARK)) & ids,
            30,
            "the campaigns' processes to end",
        )


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Errno" not in done.stderr, done.stderr


def test_a_full_disk_gives_messages_and_cancel_still_works(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    hold = tmp_path / "hold"
    with small_filesystem(tmp_path / "logs", "4m"), _reaped(tmp_path / "logs"):
        ended = _held(tmp_path, "ended", env, hold, *LOCAL)
        running = _held(tmp_path, "running", env, tmp_path / "hold2", *LOCAL)
        for campaign in (ended, running):  # no runner records what happens next
            runner = json.loads((campaign / "campaign.json").read_text())["local_runner"]
            os.kill(runner["pid"], signal.SIGKILL)
            wait_for(lambda pid=runner["pid"]: not local.pid_alive(pid), 30, "the runner to die")
        _fill(tmp_path / "logs")

        # submit: nothing half-made is left, the message says what is full
        site = make_site(tmp_path / "new", log_dir=str(tmp_path / "logs"))
        done = hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *LOCAL,
                        "--name", "new", env=env, check=False)  # fmt: skip
        _no_traceback(done)
        assert done.returncode == 2 and NO_SPACE in done.stderr and "free space" in done.stderr
        assert not [p for p in (tmp_path / "logs").iterdir() if "new" in p.name]
        assert not (tmp_path / "state" / "campaigns" / "new").exists()

        # status: the run of "ended" finishes now; its end is shown, and said not to be saved
        hold.unlink()
        wait_for(lambda: not local.job_processes(_job_id(ended, "run-01")), 60, "run-01 to end")
        for args in (["status", "ended"], ["status"], ["status", "ended", "--json"]):
            done = hpcrepro(*args, env=env, check=False)
            _no_traceback(done)
            assert done.returncode in (0, 1), done.stderr
            assert "campaign ended: this status could not be recorded" in done.stderr
            assert NO_SPACE in done.stderr and "shown, not saved" in done.stderr
        assert "ended  (local" in hpcrepro("status", env=env, check=False).stdout
        assert "running  (local" in hpcrepro("status", env=env, check=False).stdout
        shown = json.loads(hpcrepro("status", "ended", "--json", env=env, check=False).stdout)
        assert stage(shown[0], "run-01")["state"] == "failed"  # it could not write its log
        printed = tmp_path / "watch.out"  # not on the full disk
        with printed.open("w") as out:
            watch = subprocess.Popen(
                [sys.executable, "-m", "hpcrepro", "status", "--watch"],
                env=env, stdout=out, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        wait_for(lambda: "runs: " in printed.read_text(), 60, "a watch pass")
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=60)
        assert "Traceback" not in err and "could not be recorded" in err, err

        # cancel: the job stops, and the reserve left room to record it
        job_id = _job_id(running, "run-01")
        assert local.job_processes(job_id)
        done = hpcrepro("cancel", "running", env=env, check=False)
        _no_traceback(done)
        # run-02 and collect were lost with the runner: run-01 is the one job left to stop
        assert done.returncode == 0 and "cancelled 1 job(s)" in done.stdout, done.stderr
        wait_for(lambda: not local.job_processes(job_id), 30, "the job to end")
        saved = manifest_io.load(running / "campaign.json")
        assert saved.cancelled is True
        assert [s.state for s in saved.stages] == ["cancelled", "failed", "failed"]


def test_cancel_without_a_reserve_still_stops_the_jobs(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    with small_filesystem(tmp_path / "logs", "4m"), _reaped(tmp_path / "logs"):
        campaign = _held(tmp_path, "bare", env, tmp_path / "hold", *LOCAL)
        (campaign / manifest_io.RESERVE).unlink()
        job_id = _job_id(campaign, "run-01")
        _fill(tmp_path / "logs")
        done = hpcrepro("cancel", "bare", env=env, check=False)
        _no_traceback(done)
        assert done.returncode == 2, done.stderr
        assert "cancelled 3 job(s) of campaign bare, but could not record it" in done.stderr
        assert NO_SPACE in done.stderr and "the jobs are stopped" in done.stderr
        wait_for(lambda: not local.job_processes(job_id), 30, "the job to end")
        (tmp_path / "logs" / "filler").unlink()
        final = status_json("bare", env)  # with room again the end is recorded
        assert stage(final, "run-01")["state"] == "failed"
        assert final["stages"][1]["state"] not in ("pending", "running")


@pytest.mark.slurm
def test_cancel_of_a_slurm_campaign_on_a_full_disk(slurm_cluster, tmp_path: Path) -> None:
    env = cli_env(tmp_path, slurm_cluster.env)
    with small_filesystem(tmp_path / "logs", "4m"):
        campaign = _held(tmp_path, "sfull", env, tmp_path / "hold", "--set", "nodes=1",
                         "--set", "gpus_per_node=2")  # fmt: skip
        _fill(tmp_path / "logs")
        done = hpcrepro("cancel", "sfull", env=env, check=False)
        _no_traceback(done)
        assert done.returncode == 0 and "cancelled 3 job(s)" in done.stdout, done.stderr
        saved = manifest_io.load(campaign / "campaign.json")
        assert saved.cancelled is True
        ids = [s.jobs[-1].job_id or "" for s in saved.stages]
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%T"],
                                env=slurm_cluster.env, capture_output=True, text=True)  # fmt: skip
        assert set(queued.stdout.split()) <= {"CANCELLED", "COMPLETING"}, queued.stdout


def _job_id(campaign: Path, name: str) -> str:
    manifest = json.loads((campaign / "campaign.json").read_text())
    return next(s for s in manifest["stages"] if s["name"] == name)["jobs"][-1]["job_id"]
