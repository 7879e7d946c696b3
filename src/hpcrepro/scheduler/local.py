"""The local backend: the same stage graph, run on this machine in dependency order.

`submit` only marks jobs pending in the manifest; a detached runner process
(`python -m hpcrepro.scheduler.local CAMPAIGN_DIR`, in its own session so the user may close the
terminal) runs them one after another with bash and writes each job's state, pid, times and exit
status into the manifest, where `hpcrepro status` reads them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
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
        return runner.get("host") == socket.gethostname() and pid_alive(runner.get("pid"))

    def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """The runner keeps the manifest current; only a runner that died is news here."""
        if self.runner_alive():
            return {}
        host = (self.manifest.get("local_runner") or {}).get("host")
        if host and host != socket.gethostname():
            return {}  # another machine's runner: cannot tell from here
        lost: dict[str, JobInfo] = {}
        for stage in self.manifest["stages"]:
            for job in stage["jobs"]:
                if job["job_id"] in job_ids:
                    lost[job["job_id"]] = JobInfo(
                        job_id=job["job_id"],
                        name=job["token"],
                        state=states.FAILED,
                        slurm_state="RUNNER_GONE",
                        start=job.get("start"),
                        end=job.get("end"),
                        reason="the local runner process ended before this job ran",
                    )
        return lost

    def find_by_names(self, names: list[str], since: str) -> dict[str, list[JobInfo]]:
        return {}  # local jobs exist only in the manifest: a job left `submitting` never started

    def cancel(self, job_ids: list[str]) -> None:
        runner = self.manifest.get("local_runner") or {}
        if job_ids and self.runner_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(runner["pid"]), signal.SIGTERM)

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
        self.manifest["local_runner"] = {"pid": process.pid, "host": socket.gethostname()}


def _next_job(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    for stage in manifest["stages"]:
        if stage["jobs"] and stage["jobs"][-1]["state"] == states.PENDING:
            return stage, stage["jobs"][-1]
    return None


def run_campaign(campaign_dir: Path) -> None:
    """Run every pending job of the campaign, in graph order, until none is left."""
    from hpcrepro.campaign import engine
    from hpcrepro.campaign import manifest as manifest_io
    from hpcrepro.campaign import stages as st
    from hpcrepro.campaign.layout import CampaignPaths

    paths = CampaignPaths(campaign_dir)
    host = socket.gethostname()
    while True:
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            found = None if manifest.get("cancelled") else _next_job(manifest)
            if found is None:
                manifest["local_runner"] = None
                manifest_io.save(paths.manifest, manifest)
                return
            stage, job = found
            _, blocked = st.dependency_ids(manifest, stage)
            if blocked:
                job.update(state=states.BLOCKED, reason=blocked, end=st.now())
                engine.judge_runs(paths, manifest)
                manifest_io.save(paths.manifest, manifest)
                continue
            job.update(
                state=states.RUNNING,
                slurm_state="RUNNING",
                start=st.now(),
                nodes=1,
                nodelist=host,
                pid=os.getpid(),
            )
            manifest_io.save(paths.manifest, manifest)
        output = paths.job_output / f"{stage['name']}-{job['job_id'].replace(':', '_')}.out"
        env = dict(os.environ, HPCREPRO_LOCAL="1", PYTHONPATH=package_pythonpath())
        with open(output, "w") as out:
            status = subprocess.call(
                ["bash", str(paths.root / stage["script"])],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=paths.root,
            )
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            job = st.by_name(manifest)[stage["name"]]["jobs"][-1]
            state = states.COMPLETED if status == 0 else states.FAILED
            job.update(
                state=state, slurm_state=state.upper(), end=st.now(), exit_code=f"{status}:0"
            )
            engine.judge_runs(paths, manifest)
            manifest_io.save(paths.manifest, manifest)


def _on_terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_terminate)
    run_campaign(Path(sys.argv[1]))
