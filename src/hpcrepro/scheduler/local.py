"""The local backend: a campaign's jobs run on this machine, one after another, by its runner.

`submit` only names the job (its id is the one its token gives); the campaign's detached runner
(`hpcrepro.campaign.runner`, started by `wake`) runs the pending jobs in graph order with bash and
records each job's state, pid, times and exit status in the manifest, where `hpcrepro status`
reads them. This backend knows the campaign only through `LocalCampaign`: where its files are,
the mark of its processes, its recorded runner and jobs.

Every process is known by a mark in its environment, which its children inherit: the runner
carries `HPCREPRO_LOCAL_RUNNER=<campaign id>`, each job `HPCREPRO_LOCAL_JOB=<job id>`. A pid read
from the manifest is acted on only when the process behind it carries the right mark, so a pid
edited by hand (or reused by the system) is never signalled, and `cancel` finds a job's processes
even when one left the job's process group (a daemon that called setsid).

A job whose runner died is judged by what it left (`left_behind`): running while a process of it
lives, else its exit status from the file its wrapper wrote, else failed. `cancel` sends SIGTERM,
and SIGKILL to what is left after a grace period (10 s, or `$HPCREPRO_CANCEL_GRACE_S`); what
even SIGKILL leaves is reported, not called cancelled.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from hpcrepro.errors import UserError
from hpcrepro.resources import package_pythonpath
from hpcrepro.scheduler import states
from hpcrepro.scheduler.base import Cancelled, JobIdForm, JobInfo, JobRequest, Poll, Refused

JOB_MARK = "HPCREPRO_LOCAL_JOB"
RUNNER_MARK = "HPCREPRO_LOCAL_RUNNER"
GRACE_ENV = "HPCREPRO_CANCEL_GRACE_S"
GRACE_S = 10.0
_KILL_WAIT_S = 5.0  # how long processes may take to vanish after SIGKILL
RUNNER_GONE = "the local runner process ended before this job ran"


def job_id_of(token: str) -> str:
    """The id of the local job with this token: what its processes are marked with."""
    return "local:" + token.removeprefix("hpcrepro.")


JOB_IDS = JobIdForm(
    re.compile(r"local:[A-Za-z0-9._-]+"),
    'a local job id ("local:" and the job\'s token)',
    job_id_of,
)


class ProcessRecord(Protocol):
    """A process as the manifest records it: the runner's host, pid and start time."""

    pid: int
    host: str
    start: int | None


@dataclass(frozen=True)
class LocalJob:
    """What the manifest recorded of a local job; `exit_file` is relative to the campaign folder
    (the wrapper writes the job's exit status there)."""

    job_id: str
    token: str
    state: str
    exit_file: str
    start: str | None = None
    end: str | None = None
    nodes: int | None = None
    nodelist: str | None = None
    pid: int | None = None


class LocalCampaign(Protocol):
    """What this backend needs of the campaign whose jobs it runs (`campaign.runner` has it)."""

    @property
    def folder(self) -> Path: ...
    @property
    def mark(self) -> str: ...  # the campaign's id: the mark of its runner's processes

    def runner(self) -> ProcessRecord | None: ...
    def start_runner(self) -> None: ...
    def jobs(self) -> dict[str, LocalJob]: ...


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22): a pid that
    was reused has another start time. None when there is no such process."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state first), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _marks(pid: int | str, name: str) -> str | None:
    """The value of environment variable `name` that process `pid` started with, None when it
    has none or cannot be read (another user's process, gone, a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:
        return None
    prefix = f"{name}=".encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def marked_processes(name: str) -> dict[str, list[int]]:
    """Every live process carrying environment variable `name`, by its value (one pass over
    /proc; zombies left out: they have ended)."""
    found: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        value = _marks(entry.name, name)
        if value is None:
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X"):
            found.setdefault(value, []).append(int(entry.name))
    return found


def job_processes(job_id: str) -> list[int]:
    """The live processes of local job `job_id` (the wrapper, the script, and all they started)."""
    return marked_processes(JOB_MARK).get(job_id, [])


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] not in ("Z", "X")


def read_status(root: Path, relative: str) -> int | None:
    """The exit status a job's wrapper wrote, None when it wrote none (the job was killed) or
    the file is not a plain file of a few bytes (never followed through a link, never a FIFO)."""
    from hpcrepro.safeopen import open_inside

    try:
        fd = open_inside(root, relative, os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 32).strip())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def grace_seconds() -> float:
    """How long `cancel` waits after SIGTERM before SIGKILL (`$HPCREPRO_CANCEL_GRACE_S`)."""
    text = os.environ.get(GRACE_ENV)
    if text is None:
        return GRACE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise UserError(
            f"{GRACE_ENV}={text[:40]!r} is not a number of seconds from 0 to 3600",
            where=f"environment variable {GRACE_ENV}",
            hint=f"unset it for the default of {GRACE_S:.0f} s",
        )
    return value


def runner_alive(runner: ProcessRecord | None, mark: str) -> bool:
    """Whether the recorded runner runs: same host, same start time, and the process carries the
    campaign's runner mark (a pid edited by hand is no runner)."""
    if runner is None or runner.host != socket.gethostname() or not pid_alive(runner.pid):
        return False
    if runner.start is not None and process_start(runner.pid) not in (None, runner.start):
        return False
    return _marks(runner.pid, RUNNER_MARK) == mark


class Local:
    """The jobs of one campaign, on this machine."""

    name = "local"
    title = "the local runner"
    names_complete = True  # local jobs exist only in the manifest
    patience = 0.0  # it always answers
    per_campaign = True  # each campaign has its own runner

    def __init__(self, campaign: LocalCampaign) -> None:
        self.campaign = campaign
        self.commands: list[str] = []

    def check_available(self) -> None:
        """This machine is always there."""

    def check_runtime(self, runtime: str, where: str) -> None:
        """Refuse a container runtime this machine cannot start: pyxis is a Slurm plugin (srun
        --container-image) and local jobs run without Slurm; Apptainer must be installed."""
        if runtime == "pyxis":
            raise UserError(
                "the local backend cannot use runtime 'pyxis': pyxis is a Slurm plugin (srun "
                "--container-image) and local jobs run without Slurm, so every run would fail",
                where=where,
                hint="--set runtime=none runs the training command on this machine as it is "
                "(with train_command or --set workload=reference); --set runtime=apptainer runs "
                "the image with Apptainer; or submit to Slurm (--backend slurm)",
            )
        if runtime == "apptainer" and shutil.which("apptainer") is None:
            raise UserError(
                "the local backend runs jobs on this machine, but runtime 'apptainer' needs the "
                "`apptainer` command, which is not on PATH here: every run would fail",
                where=where,
                hint="install Apptainer, use --set runtime=none, or submit to Slurm",
            )

    def test_only(self, request: JobRequest) -> None:
        done = subprocess.run(["bash", "-n", str(request.script)], capture_output=True, text=True)
        if done.returncode != 0:
            raise Refused(request.script, done.stderr, test_only=True)

    def submit(self, request: JobRequest) -> str:
        """The job's id; the runner runs it once `wake` has started the runner."""
        return job_id_of(request.name)

    def wake(self) -> None:
        """Start the campaign's runner unless it runs."""
        if not self.runner_alive():
            self.campaign.start_runner()

    def dry_run(self, requests: Sequence[JobRequest]) -> list[str]:
        """What the runner runs: each script with bash, one after another in graph order; a job
        whose `afterok` dependency failed is not run."""
        lines = [
            "# local backend: a detached runner runs these one after another; a stage after a "
            "failed stage it needs (afterok) is not run",
            f"export HPCREPRO_LOCAL=1 PYTHONPATH={shlex.quote(package_pythonpath())}",
            f"cd {shlex.quote(str(self.campaign.folder))}",
        ]
        lines += [f"bash {shlex.quote(str(r.script))}  # {r.label}" for r in requests]
        return lines

    def runner_alive(self) -> bool:
        return runner_alive(self.campaign.runner(), self.campaign.mark)

    def poll(self, job_ids: Sequence[str]) -> Poll:
        """The runner keeps the manifest current; only a runner that died is news here."""
        if self.runner_alive():
            return Poll()
        runner = self.campaign.runner()
        if runner is not None and runner.host != socket.gethostname():
            return Poll()  # another machine's runner: cannot tell from here
        recorded = self.campaign.jobs()
        running = marked_processes(JOB_MARK)
        found: dict[str, JobInfo] = {}
        for job_id in job_ids:
            job = recorded.get(job_id)
            info = self.left_behind(job, running) if job is not None else None
            if info is not None:
                found[job_id] = info
        return Poll(found)

    def left_behind(self, job: LocalJob, running: dict[str, list[int]]) -> JobInfo | None:
        """What became of a job whose runner is gone: None while a process of it still runs (on
        another host: cannot be told), else its end from the exit file it left, or failed."""
        if job.state == states.RUNNING and (
            job.nodelist not in (None, socket.gethostname()) or running.get(job.job_id)
        ):
            return None
        ended = _ended(job)
        if job.state != states.RUNNING or not job.pid:
            # never started: a job runs only once its pid is recorded (the gate)
            return ended(states.FAILED, RUNNER_GONE, None)
        status = read_status(self.campaign.folder, job.exit_file)
        if status is None:
            return ended(
                states.FAILED, "the local runner and this job ended; no exit status was left", None
            )
        return ended(states.COMPLETED if status == 0 else states.FAILED, None, f"{status}:0")

    def find_by_names(self, names: Sequence[str], since: str) -> dict[str, list[JobInfo]]:
        return {}  # local jobs exist only in the manifest: a job left `submitting` never started

    def cancel(self, job_ids: Sequence[str]) -> Cancelled:
        """Stop the runner (so that it starts nothing more) and every process of the given jobs:
        SIGTERM, then SIGKILL after the grace period. The jobs that stopped are cancelled now;
        `notes` says what needed SIGKILL, `survivors` what was still alive after it."""
        if not job_ids:
            return Cancelled()
        grace = grace_seconds()
        recorded = self.campaign.runner()
        runner = [recorded.pid] if recorded is not None and self.runner_alive() else []
        wanted = set(job_ids)

        def alive() -> dict[str, list[int]]:
            found = {job: pids for job, pids in marked_processes(JOB_MARK).items() if job in wanted}
            left = [pid for pid in runner if pid_alive(pid)]
            return {**found, "the local runner": left} if left else found

        notes: list[str] = []
        _signal(alive(), signal.SIGTERM)
        left = _wait_until_gone(alive, grace)
        if left:
            for what, pids in left.items():
                notes.append(
                    f"{what}: {len(pids)} process(es) ignored SIGTERM for "
                    f"{grace:g} s and were killed with SIGKILL"
                )
            _signal(left, signal.SIGKILL)
            left = _wait_until_gone(alive, _KILL_WAIT_S)
        survivors = {what: ", ".join(_describe(pid) for pid in pids) for what, pids in left.items()}
        jobs = self.campaign.jobs()
        infos = {
            job_id: _ended(jobs[job_id])(states.CANCELLED, None, None)
            for job_id in job_ids
            if job_id in jobs and job_id not in survivors
        }
        return Cancelled(infos, notes, survivors)


def _ended(job: LocalJob) -> Callable[[str, str | None, str | None], JobInfo]:
    """A JobInfo of `job` ending now in a state, keeping what the runner recorded of it."""

    def info(state: str, reason: str | None, exit_code: str | None) -> JobInfo:
        return JobInfo(
            job_id=job.job_id,
            name=job.token,
            state=state,
            start=job.start,
            end=job.end or _now(),
            nodes=job.nodes,
            nodelist=job.nodelist,
            reason=reason,
            exit_code=exit_code,
        )

    return info


def _signal(targets: dict[str, list[int]], signum: int) -> None:
    for pids in targets.values():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


def _wait_until_gone(
    alive: Callable[[], dict[str, list[int]]], seconds: float
) -> dict[str, list[int]]:
    """Poll `alive()` until it finds nothing or `seconds` have passed; what it found last."""
    deadline = time.monotonic() + seconds
    left = alive()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = alive()
    return {what: pids for what, pids in left.items() if pids}


def _describe(pid: int) -> str:
    fields = _stat_fields(pid)
    try:
        with open(f"/proc/{pid}/comm") as handle:
            name = handle.read().strip()
    except OSError:
        name = "?"
    state = fields[0] if fields else "?"
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = -1
    why = (
        " (uninterruptible I/O)"
        if state == "D"
        else (" (another user's: not allowed)" if owner not in (-1, os.geteuid()) else "")
    )
    return f"pid {pid} {name} state {state}{why}"
