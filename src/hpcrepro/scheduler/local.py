"""The local backend: the same stage graph, run on this machine in dependency order.

`submit` only marks jobs pending in the manifest; a detached runner process
(`python -m hpcrepro.scheduler.local CAMPAIGN_DIR`, in its own session so the user may close the
terminal) runs them one after another with bash and writes each job's state, pid, times and exit
status into the manifest, where `hpcrepro status` reads them.

Each job runs in a session (and process group) of its own, whose leader's pid and start time are
recorded in the job, and a small bash wrapper writes the job's exit status next to its output. So
when the runner itself dies (kill -9, the OOM killer), a job it left keeps being seen: `status`
shows it running while its process group lives and then its real exit status, `cancel` kills the
group, and the next runner (started by `resume`) waits for it before running anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hpcrepro.scheduler import states
from hpcrepro.scheduler.slurm import JobInfo

RUNNER_LOG = "local-runner.log"


def package_pythonpath() -> str:
    """PYTHONPATH that lets a child process import this very hpcrepro (checkout or install)."""
    root = str(Path(__file__).resolve().parents[2])
    current = os.environ.get("PYTHONPATH")
    return f"{root}:{current}" if current else root


_WAIT_S = 1.0  # how often a runner looks whether a job left by an earlier runner has ended
_current: subprocess.Popen[bytes] | None = None  # the job this runner process runs now
# Runs the job script, then writes its exit status to a file: read when the runner is gone.
_WRAPPER = 'bash "$1"; status=$?; echo "$status" > "$2"; exit "$status"'


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22): a pid that
    was reused has another start time. None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def group_alive(pid: int | None, started: int | None) -> bool:
    """Whether the process group a job leads (pgid = pid of its first process) still has a
    process. A leader pid now held by another process (its start time differs) is a dead job."""
    if not pid:
        return False
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = process_start(pid)
    return now is None or started is None or now == started


def _read_status(path: str | None) -> int | None:
    """The exit status the job wrapper wrote, None when it wrote none (the job was killed)."""
    if not path:
        return None
    try:
        with open(path) as handle:
            return int(handle.read(32).strip())
    except (OSError, ValueError):
        return None


def _now() -> str:
    from hpcrepro.campaign import stages as st

    return st.now()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this very process counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class Local:
    """Backend object with the Slurm backend's interface, for this machine."""

    name = "local"
    names_complete = True  # local jobs exist only in the manifest

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self.commands: list[str] = []

    def submit(self, script: Path, args: list[str]) -> str:
        name = next(a.split("=", 1)[1] for a in args if a.startswith("--job-name="))
        return "local:" + name.removeprefix("hpcrepro.")

    def test_only(self, script: Path, args: list[str]) -> None:
        from hpcrepro.scheduler.slurm import SubmitError

        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SubmitError(script, done.stderr, test_only=True)

    def runner_alive(self) -> bool:
        runner = self.manifest.get("local_runner") or {}
        if runner.get("host") != socket.gethostname() or not pid_alive(runner.get("pid")):
            return False
        started = runner.get("start")
        return started is None or process_start(int(runner["pid"])) in (None, started)

    def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """The runner keeps the manifest current; only a runner that died is news here."""
        if self.runner_alive():
            return {}
        host = (self.manifest.get("local_runner") or {}).get("host")
        if host and host != socket.gethostname():
            return {}  # another machine's runner: cannot tell from here
        found: dict[str, JobInfo] = {}
        for stage in self.manifest["stages"]:
            for job in stage["jobs"]:
                if job["job_id"] in job_ids:
                    info = self.left_behind(job)
                    if info is not None:
                        found[job["job_id"]] = info
        return found

    def left_behind(self, job: dict[str, Any]) -> JobInfo | None:
        """What became of a job whose runner is gone: None while its process group still runs
        (on another host: cannot be told), else its end from the exit file it left, or failed."""
        if job["state"] == states.RUNNING and (
            job.get("nodelist") not in (None, socket.gethostname())
            or group_alive(job.get("pid"), job.get("pid_start"))
        ):
            return None
        common = {"job_id": job["job_id"], "name": job["token"], "start": job.get("start"),
                  "nodes": job.get("nodes"), "nodelist": job.get("nodelist")}
        if job["state"] != states.RUNNING:
            return JobInfo(**common, state=states.FAILED, slurm_state="RUNNER_GONE",
                           end=job.get("end"),
                           reason="the local runner process ended before this job ran")
        status = _read_status(job.get("exit_file"))
        if status is None:
            return JobInfo(**common, state=states.FAILED, slurm_state="RUNNER_GONE",
                           end=job.get("end") or _now(),
                           reason="the local runner and this job ended; no exit status was left")
        state = states.COMPLETED if status == 0 else states.FAILED
        return JobInfo(**common, state=state, slurm_state=state.upper(),
                       end=job.get("end") or _now(), exit_code=f"{status}:0")

    def find_by_names(self, names: list[str], since: str) -> dict[str, list[JobInfo]]:
        return {}  # local jobs exist only in the manifest: a job left `submitting` never started

    def cancel(self, job_ids: list[str]) -> None:
        """Stop the runner (which stops the job it runs) and the process group of every given
        job still running, also those a dead runner left behind."""
        runner = self.manifest.get("local_runner") or {}
        if job_ids and self.runner_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(runner["pid"]), signal.SIGTERM)
        for stage in self.manifest["stages"]:
            for job in stage["jobs"]:
                if (
                    job["job_id"] in job_ids
                    and job.get("nodelist") in (None, socket.gethostname())
                    and group_alive(job.get("pid"), job.get("pid_start"))
                ):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(int(job["pid"]), signal.SIGTERM)

    def start_runner(self, campaign_dir: Path) -> None:
        """Start the detached runner unless one is alive; record it in the manifest."""
        if self.runner_alive():
            return
        log = open(campaign_dir / "jobs" / RUNNER_LOG, "a")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONPATH=package_pythonpath())
        process = subprocess.Popen(
            [sys.executable, "-m", "hpcrepro.scheduler.local", str(campaign_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=campaign_dir,
        )
        log.close()
        self.manifest["local_runner"] = {
            "pid": process.pid,
            "start": process_start(process.pid),
            "host": socket.gethostname(),
        }


def _next_job(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    for stage in manifest["stages"]:
        if stage["jobs"] and stage["jobs"][-1]["state"] == states.PENDING:
            return stage, stage["jobs"][-1]
    return None


def run_campaign(campaign_dir: Path) -> None:
    """Run every pending job of the campaign, in graph order, until none is left; first wait for
    any job an earlier runner left running (one job at a time on this machine)."""
    from hpcrepro.campaign import engine
    from hpcrepro.campaign import manifest as manifest_io
    from hpcrepro.campaign import stages as st
    from hpcrepro.campaign.layout import CampaignPaths

    global _current
    paths = CampaignPaths(campaign_dir)
    host = socket.gethostname()
    while True:
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            waiting = _settle_left_behind(paths, manifest)
            found = None if manifest.get("cancelled") or waiting else _next_job(manifest)
            if found is None and not waiting:
                manifest["local_runner"] = None
                manifest_io.save(paths.manifest, manifest)
                return
            if found is not None:
                stage, job = found
                _, blocked = st.dependency_ids(manifest, stage)
                if blocked:
                    job.update(state=states.BLOCKED, reason=blocked, end=st.now())
                    engine.judge_runs(paths, manifest)
                    manifest_io.save(paths.manifest, manifest)
                    continue
                job.update(
                    state=states.RUNNING, slurm_state="RUNNING", start=st.now(), nodes=1,
                    nodelist=host, pid=None,
                )
                manifest_io.save(paths.manifest, manifest)
        if found is None:
            time.sleep(_WAIT_S)
            continue
        output = paths.job_output / f"{stage['name']}-{job['job_id'].replace(':', '_')}.out"
        status_file = output.with_suffix(".exit")
        status_file.unlink(missing_ok=True)
        env = dict(os.environ, HPCREPRO_LOCAL="1", PYTHONPATH=package_pythonpath())
        with open(output, "w") as out:
            _current = subprocess.Popen(
                ["bash", "-c", _WRAPPER, "hpcrepro-job", str(paths.root / stage["script"]),
                 str(status_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=paths.root,
                start_new_session=True,  # its own process group, which cancel can kill
            )
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            job = st.by_name(manifest)[stage["name"]]["jobs"][-1]
            job.update(pid=_current.pid, pid_start=process_start(_current.pid),
                       exit_file=str(status_file))
            manifest_io.save(paths.manifest, manifest)
        status = _current.wait()
        _current = None
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            job = st.by_name(manifest)[stage["name"]]["jobs"][-1]
            if job["state"] == states.RUNNING:
                state = states.COMPLETED if status == 0 else states.FAILED
                job.update(
                    state=state, slurm_state=state.upper(), end=st.now(), exit_code=f"{status}:0"
                )
                engine.judge_runs(paths, manifest)
                manifest_io.save(paths.manifest, manifest)


def _settle_left_behind(paths: Any, manifest: dict[str, Any]) -> bool:
    """Record the end of jobs an earlier runner left running (saved here); True while one of
    them still runs."""
    from hpcrepro.campaign import engine
    from hpcrepro.campaign import manifest as manifest_io

    local = Local(manifest)
    infos: dict[str, JobInfo] = {}
    still_running = False
    for stage in manifest["stages"]:
        job = stage["jobs"][-1] if stage["jobs"] else None
        if job is None or job["state"] != states.RUNNING:
            continue
        info = local.left_behind(job)
        if info is None:
            still_running = True
        else:
            infos[job["job_id"]] = info
    if infos:
        engine.apply_infos(paths, manifest, infos)
        manifest_io.save(paths.manifest, manifest)
    return still_running


def _on_terminate(signum: int, frame: object) -> None:
    """Cancel: stop the job being run (its own process group) with the runner."""
    if _current is not None and _current.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_current.pid, signal.SIGTERM)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_terminate)
    run_campaign(Path(sys.argv[1]))
