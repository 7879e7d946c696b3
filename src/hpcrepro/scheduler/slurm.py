"""The Slurm backend: sbatch, one batched sacct (and squeue for jobs still going), scancel.

A `JobRequest` becomes `sbatch --parsable` with the attempt's name and its dependency (the
script carries every other option in its #SBATCH lines); every Slurm state is mapped to
hpcrepro's (`from_slurm`). Every call goes through `Slurm.run`, which counts the commands made,
so status and the benchmark can show that a status pass costs one or two commands whatever the
number of jobs.

A controller that does not answer is not one that refuses: an sbatch that timed out may have
created its job (slurmctld reads the request once it runs again), so it raises `SubmitUncertain`,
never `SubmitError`, and the campaign engine looks the job up by its name before it submits again.
`patience` (`$HPCREPRO_SLURM_PATIENCE_S`, default 120 s) is how long submit waits for a stalled
controller. A status pass whose squeue fails says so (`Poll.unanswered`, `Poll.problem`) instead
of leaving the jobs as they were.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.scheduler import states
from hpcrepro.scheduler.base import (
    Backoff,
    CancelFailed,
    Cancelled,
    JobIdForm,
    JobInfo,
    JobRequest,
    Poll,
    Refused,
    SubmitUncertain,
    Unavailable,
)

# sacct and squeue fields, in the order we ask for them; '|' never occurs in our job names.
_SACCT_FIELDS = "JobIDRaw,JobName,State,Start,End,Elapsed,NNodes,NodeList,Reason,ExitCode"
_SQUEUE_FORMAT = "%i|%j|%T|%S|%e|%M|%D|%N|%r|%k"
_MAX_IDS_PER_CALL = 2000  # keeps the argument list far below ARG_MAX
_NOT_SET = {"", "Unknown", "None", "None assigned", "N/A", "(null)"}
# scancel's errors for a job that has already ended: nothing left to cancel
_ALREADY_GONE = ("Invalid job id specified", "Job/step already completing or completed")
# What Slurm's clients print when the controller did not answer (slurm_errno.c): the request may
# or may not have reached it, so these never count as a refusal.
_NO_ANSWER = (
    "socket timed out",
    "unable to contact slurm controller",
    "zero bytes were transmitted or received",
    "communication connection failure",
    "communication send failure",
    "communication receive failure",
    "connection refused",
    "connection reset by peer",
    "connection timed out",
    "transport endpoint is not connected",
    "resource temporarily unavailable",
    "temporarily unable to accept job",
    "backup controller in standby mode",
    "protocol authentication error",
)
# A Slurm job id as sbatch --parsable prints it (before any ';cluster'): digits, or an array task
# (123_4) or a heterogeneous job component (123+1). Nothing else may reach a command line: a job id
# read from a manifest edited by hand could otherwise be an option ("--user=root").
JOB_ID = re.compile(r"[0-9]+(?:_[0-9]+|\+[0-9]+)?")
JOB_IDS = JobIdForm(JOB_ID, 'a Slurm job id (digits, e.g. "4211", "4211_3" or "4211+1")')
PATIENCE_ENV = "HPCREPRO_SLURM_PATIENCE_S"
PATIENCE_S = 120.0
# The state note of a job that neither squeue nor sacct knows any more
GONE_NOTE = (
    "ended, outcome unknown: Slurm no longer lists the job and accounting has no record of it; "
    "its runs are judged by their logs"
)


# --- Slurm's states, mapped to hpcrepro's (sacct and squeue use the same names; sacct adds
# suffixes such as "CANCELLED by 1000")

SLURM_STATES: dict[str, str] = {
    "PENDING": states.PENDING,
    "CONFIGURING": states.PENDING,  # nodes allocated, still booting
    "REQUEUE_HOLD": states.PENDING,
    "REQUEUE_FED": states.PENDING,
    "RESV_DEL_HOLD": states.PENDING,
    "SPECIAL_EXIT": states.PENDING,  # held after a special exit code, waits for the user
    "RUNNING": states.RUNNING,
    "COMPLETING": states.RUNNING,
    "RESIZING": states.RUNNING,
    "SIGNALING": states.RUNNING,
    "STAGE_OUT": states.RUNNING,
    "SUSPENDED": states.SUSPENDED,
    "STOPPED": states.SUSPENDED,
    "COMPLETED": states.COMPLETED,
    "FAILED": states.FAILED,
    "BOOT_FAIL": states.FAILED,
    "DEADLINE": states.FAILED,
    "LAUNCH_FAILED": states.FAILED,
    "CANCELLED": states.CANCELLED,
    "REVOKED": states.CANCELLED,  # a federated sibling ran it instead
    "TIMEOUT": states.TIMEOUT,
    "PREEMPTED": states.PREEMPTED,
    "NODE_FAIL": states.NODE_FAIL,
    "OUT_OF_MEMORY": states.OUT_OF_MEMORY,
    "REQUEUED": states.REQUEUED,
}

# squeue's compact codes (%t) for completeness; sacct and `squeue -o %T` print the long names.
SLURM_SHORT: dict[str, str] = {
    "PD": "PENDING",
    "CF": "CONFIGURING",
    "RH": "REQUEUE_HOLD",
    "RF": "REQUEUE_FED",
    "RD": "RESV_DEL_HOLD",
    "SE": "SPECIAL_EXIT",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "RS": "RESIZING",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "S": "SUSPENDED",
    "ST": "STOPPED",
    "CD": "COMPLETED",
    "F": "FAILED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "CA": "CANCELLED",
    "RV": "REVOKED",
    "TO": "TIMEOUT",
    "PR": "PREEMPTED",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "RQ": "REQUEUED",
}


def from_slurm(raw: str) -> str:
    """Map a Slurm state string ('CANCELLED by 0', 'RUNNING', 'CD', 'PENDING+') to ours."""
    word = raw.strip().split(" ", 1)[0].rstrip("+*")
    word = SLURM_SHORT.get(word, word)
    return SLURM_STATES.get(word, states.UNKNOWN)


class SubmitError(Refused):
    """sbatch refused a script; the hint is matched to Slurm's own words (`_HINTS`)."""

    title = "Slurm"

    def __init__(self, script: Path, output: str, *, test_only: bool = False) -> None:
        super().__init__(script, output, test_only=test_only)
        self.hint = _hint_for(self.problem)


def sbatch_args(request: JobRequest) -> list[str]:
    """What sbatch gets on its command line besides the script: only what is known at submit
    time, the attempt's name and its dependency. The script's #SBATCH lines carry every other
    option (a later attempt of a run has another name than the one its script was written with)."""
    args = [f"--job-name={request.name}"]
    if request.dependency and request.dependency.job_ids:
        kind, ids = request.dependency.kind, request.dependency.job_ids
        args.append(f"--dependency={kind}:{':'.join(ids)}")
        args.append("--kill-on-invalid-dep=yes")
    return args


class Slurm:
    """Talks to one Slurm cluster through its command-line tools."""

    name = "slurm"
    title = "Slurm"
    per_campaign = False  # one cluster answers for every campaign's jobs at once

    def __init__(
        self,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
        patience: float | None = None,
    ) -> None:
        self.env = env
        self.timeout = timeout
        # how long submit keeps asking a controller that does not answer
        self.patience = patience_seconds() if patience is None else patience
        self.commands: list[str] = []
        self.last_error = ""  # the last line a failing squeue printed
        # whether the last find_by_names saw ended jobs too (sacct answered)
        self.names_complete = True

    # --- plumbing

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one Slurm command; a missing tool or a timeout becomes Unavailable."""
        self.commands.append(argv[0])
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, env=self.env, timeout=self.timeout
            )
        except FileNotFoundError as error:
            raise Unavailable(
                f"'{argv[0]}' is not installed here, so no Slurm cluster can be used",
                hint="run on a Slurm login node, or use --backend local to run on this machine",
            ) from error
        except subprocess.TimeoutExpired as error:
            raise Unavailable(
                f"'{argv[0]}' did not answer within {self.timeout:.0f} s",
                hint="check that slurmctld is up (scontrol ping), or use --backend local",
            ) from error
        if check and done.returncode != 0:
            raise SlurmCommandError(argv, done)
        return done

    def _path(self) -> str | None:
        return (self.env or os.environ).get("PATH")

    def check_available(self) -> None:
        """Raise Unavailable with a one-line reason unless a controller answers."""
        if shutil.which("sbatch", path=self._path()) is None:
            raise Unavailable(
                "no Slurm here: 'sbatch' is not on PATH",
                hint="use --backend local to run the same stages on this machine",
            )
        done = self.run(["scontrol", "ping"], check=False)
        if done.returncode != 0 or " is UP" not in done.stdout:
            # scontrol's first line says which controller is DOWN; banners of '*' follow
            detail = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            raise Unavailable(
                "no Slurm controller answers: " + (detail[0] if detail else "scontrol ping failed"),
                hint="use --backend local to run the same stages on this machine",
            )

    def check_runtime(self, runtime: str, where: str) -> None:
        """Every container runtime runs under Slurm (pyxis is its plugin)."""

    # --- submission

    def submit(self, request: JobRequest) -> str:
        """Submit one job with `sbatch --parsable`; return its id. SubmitError when Slurm refused
        it, SubmitUncertain when it did not answer."""
        script = request.script
        try:
            done = self.run(
                ["sbatch", "--parsable", *sbatch_args(request), str(script)], check=False
            )
        except Unavailable as error:
            raise SubmitUncertain(error.message, hint=error.hint) from error
        if done.returncode != 0:
            output = done.stderr or done.stdout
            if no_answer(output):
                raise SubmitUncertain(
                    f"sbatch got no answer from the controller: {_last_line(output)}"
                )
            raise SubmitError(script, output)
        return done.stdout.strip().splitlines()[-1].split(";", 1)[0]

    def test_only(self, request: JobRequest) -> None:
        """Ask the controller whether it would accept the job (`sbatch --test-only`); a controller
        that does not answer is asked again, with back-off, for `patience` seconds."""
        args = [*sbatch_args(request), str(request.script)]
        deadline = time.monotonic() + self.patience
        delays = Backoff(first=1.0, factor=2.0, maximum=15.0)
        while True:
            try:
                done = self.run(["sbatch", "--test-only", *args], check=False)
                output = done.stderr or done.stdout
                if done.returncode == 0 or not no_answer(output):
                    break
                problem = _last_line(output)
            except Unavailable as error:
                problem = error.message
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"the Slurm controller did not answer `sbatch --test-only` for "
                    f"{self.patience:.0f} s ({problem}); nothing was submitted",
                    hint="submit again once `scontrol ping` says the controller is UP",
                )
            time.sleep(min(delays.next(changed=False), max(0.0, deadline - time.monotonic())))
        if done.returncode != 0:
            raise SubmitError(request.script, output, test_only=True)

    def wake(self) -> None:
        """Slurm starts the jobs it queued by itself."""

    def dry_run(self, requests: Sequence[JobRequest]) -> list[str]:
        """The sbatch commands of `requests` as a shell script; a dependency names the labels of
        earlier requests, whose job ids the script keeps in `$job_<label>` variables."""
        lines = []
        for request in requests:
            if request.dependency:
                ids = tuple(f"${_variable(label)}" for label in request.dependency.job_ids)
                request = _with_dependency(request, ids)
            words = ["sbatch", "--parsable"]
            for arg in sbatch_args(request):
                # the dependency holds $job_... variables: double quotes keep them expandable
                words.append(f'"{arg}"' if arg.startswith("--dependency=") else shlex.quote(arg))
            words.append(shlex.quote(str(request.script)))
            lines.append(f"{_variable(request.label)}=$({' '.join(words)})")
        return lines

    def cancel(self, job_ids: Sequence[str]) -> Cancelled:
        """scancel the jobs; raise CancelFailed unless Slurm took every one (a job id Slurm no
        longer knows has nothing left to cancel, so that error alone is fine). Their states
        come with the next poll."""
        if not job_ids:
            return Cancelled()
        done = self.run(["scancel", *checked_job_ids(job_ids)], check=False)
        if done.returncode == 0:
            return Cancelled()
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        problems = [line for line in lines if not any(ok in line for ok in _ALREADY_GONE)]
        if problems or not lines:
            raise CancelFailed(
                problems[0] if problems else f"scancel exited {done.returncode}", len(problems)
            )
        return Cancelled()

    # --- state

    def poll(self, job_ids: Sequence[str]) -> Poll:
        """State of every given job: one sacct call, plus one squeue call when a job is still
        going (the controller knows its state first) or unknown to accounting (just submitted),
        or for all of them when accounting is off.

        When squeue fails, the jobs accounting shows ended are answered; the others are left
        out and named in `unanswered`, with the reason in `problem`. Unavailable when neither
        command answers."""
        wanted = list(dict.fromkeys(checked_job_ids(job_ids)))
        if not wanted:
            return Poll()
        recorded: dict[str, JobInfo] = {}
        accounting = True
        for chunk in _chunks(wanted, _MAX_IDS_PER_CALL):
            done = self.run(
                ["sacct", "-X", "-n", "-P", "-j", ",".join(chunk), "-o", _SACCT_FIELDS], check=False
            )
            if done.returncode != 0:
                accounting = False
                break
            recorded.update(_parse_sacct(done.stdout))
        going = [
            job
            for job in wanted
            if job not in recorded or not states.is_finished(recorded[job].state)
        ]
        if accounting and not going:
            return Poll({job: recorded[job] for job in wanted})
        try:
            queued = self._squeue_mine()
        except Unavailable as error:
            queued, self.last_error = None, error.message
        if queued is None:
            if not accounting:
                raise Unavailable(
                    f"neither sacct nor squeue answered ({self.last_error})",
                    hint="check that slurmctld is up (scontrol ping)",
                )
            return Poll(
                {job: recorded[job] for job in wanted if job in recorded and job not in going},
                set(going),
                f"the Slurm controller did not answer ({self.last_error})",
            )
        found: dict[str, JobInfo] = {}
        for job in wanted:
            record, listed = recorded.get(job), queued.get(job)
            if listed is None:
                # Neither list knows a job submitted earlier: it ended and slurmctld purged it
                # (MinJobAge) with accounting off or not recording. Its outcome is lost, not
                # pending: left active it would stay "running" for ever.
                found[job] = record if record is not None else gone(job)
            elif states.is_active(listed.state):
                found[job] = listed
            elif record is not None and states.is_finished(record.state):
                found[job] = record
            elif not accounting:
                found[job] = listed
            # else: ended for squeue, not yet for accounting, whose complete record (squeue
            # drops nodes that finished first) is taken on the next pass
        return Poll(found)

    def find_by_names(self, names: Sequence[str], since: str) -> dict[str, list[JobInfo]]:
        """Jobs carrying one of `names` (campaign/stage tokens), from squeue and sacct together.
        Without sacct only jobs slurmctld still lists are found: `names_complete` says so."""
        wanted = set(names)
        self.names_complete = True
        result: dict[str, dict[str, JobInfo]] = {name: {} for name in wanted}
        queued = self._squeue_mine()
        if queued is None:  # "not found" must never come from a failed lookup: that resubmits
            raise Unavailable(
                f"squeue did not answer ({self.last_error}), so interrupted submissions "
                "cannot be checked",
                hint="try again when `scontrol ping` says the controller is UP",
            )
        for job in queued.values():
            if job.name in wanted:
                result[job.name][job.job_id] = job
        for chunk in _chunks(sorted(wanted), 500):
            done = self.run(
                ["sacct", "-X", "-n", "-P", "-S", since, "--name", ",".join(chunk),
                 "-o", _SACCT_FIELDS],
                check=False,
            )  # fmt: skip
            if done.returncode != 0:
                self.names_complete = False
                break
            for job in _parse_sacct(done.stdout).values():
                if job.name in wanted:
                    result[job.name].setdefault(job.job_id, job)
        return {
            name: sorted(jobs.values(), key=lambda j: int(j.job_id.split("_")[0]))
            for name, jobs in result.items()
        }

    def _squeue_mine(self) -> dict[str, JobInfo] | None:
        """This user's jobs known to slurmctld, or None when squeue fails."""
        done = self.run(["squeue", "-h", "--me", "-t", "all", "-o", _SQUEUE_FORMAT], check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            self.last_error = lines[-1] if lines else f"exit {done.returncode}"
            return None
        return _parse_squeue(done.stdout)


def _variable(label: str) -> str:
    return "job_" + label.replace("-", "_")


def _with_dependency(request: JobRequest, job_ids: tuple[str, ...]) -> JobRequest:
    from dataclasses import replace

    assert request.dependency is not None
    return replace(request, dependency=replace(request.dependency, job_ids=job_ids))


def no_answer(output: str) -> bool:
    """Whether a Slurm client's error output says the controller did not answer."""
    text = output.lower()
    return any(words in text for words in _NO_ANSWER)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def patience_seconds() -> float:
    """How long submit waits for a controller that does not answer ($HPCREPRO_SLURM_PATIENCE_S)."""
    text = os.environ.get(PATIENCE_ENV)
    if text is None:
        return PATIENCE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise UserError(
            f"{PATIENCE_ENV}={text[:40]!r} is not a number of seconds from 0 to 86400",
            where=f"environment variable {PATIENCE_ENV}",
            hint=f"unset it for the default of {PATIENCE_S:.0f} s",
        )
    return value


def checked_job_ids(job_ids: Sequence[str]) -> list[str]:
    """The ids unchanged, or a UserError naming the first one that is not a Slurm job id."""
    for job_id in job_ids:
        if not isinstance(job_id, str) or JOB_ID.fullmatch(job_id) is None:
            raise UserError(
                f"refusing to pass {job_id!r} to Slurm: it is not a job id "
                "(digits, as sbatch prints them)",
                hint="the campaign's campaign.json was edited by hand or damaged; restore it",
            )
    return list(job_ids)


class SlurmCommandError(UserError):
    def __init__(self, argv: Sequence[str], done: subprocess.CompletedProcess[str]) -> None:
        detail = (done.stderr or done.stdout).strip()
        super().__init__(f"'{' '.join(argv[:2])}' failed (exit {done.returncode}): {detail}")


# sbatch's refusals (Slurm's own error texts, from slurm_errno.c and sbatch's option parser),
# matched in this order: an account message also names "partition", a QOS-limit message also says
# "time limits", so the specific texts come before the general words.
_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("network",),
        "NVIDIA's configs ask for SHARP (--network=sharp), which this cluster's switch plugin "
        "refuses: drop it with --set sbatch_network=null, or put the site's own --network "
        "option in sbatch_args",
    ),
    (
        ("invalid account or account/partition combination",),
        "the account does not exist or may not use this partition: compare the site's account "
        "and partition with `sacctmgr show assoc user=$USER format=account,partition` and set "
        "them with --set account=NAME / --set partition=NAME",
    ),
    (
        ("violates accounting/qos policy",),
        "a limit of your account or QOS refuses the job: the number of jobs you may have queued "
        "(MaxSubmitJobs) or a size/time limit; `sacctmgr show assoc user=$USER` and "
        "`sacctmgr show qos` list them",
    ),
    (
        ("invalid qos specification", "qos"),
        "check the site's qos against `sacctmgr show assoc user=$USER format=qos` (--set qos=NAME)",
    ),
    (
        ("invalid --begin specification", "invalid time specification"),
        "an option in sbatch_args has a time Slurm cannot read (e.g. --begin=now+1hour or "
        "--begin=2026-12-01T08:00 are valid): fix it in the site file or with --set sbatch_args",
    ),
    (
        ("invalid partition", "partition not available", "access/permission denied"),
        "set an existing partition that you may use in the site file (`sinfo -s` lists them) "
        "or --set partition=NAME",
    ),
    (
        ("node configuration is not available", "node count"),
        "the cluster cannot give this many nodes/CPUs/GPUs in that partition; check `sinfo`, "
        "the site's gpu_request and constraint, or pick a smaller system",
    ),
    (
        ("generic resource", "gres"),
        "the GPU request does not match the nodes: check the site's gpu_request against "
        "`sinfo -o '%P %G'`",
    ),
    (
        ("time limit",),
        "the time limit exceeds the partition's limit; lower --runs or time_margin_minutes",
    ),
    (
        ("account", "association"),
        "check the site's account and qos against `sacctmgr show assoc user=$USER`",
    ),
    (
        ("dependency",),
        "a job this stage depends on is unknown to Slurm; run `hpcrepro resume`",
    ),
)


def _hint_for(problem: str) -> str:
    text = problem.lower()
    for needles, hint in _HINTS:
        if any(needle in text for needle in needles):
            return hint
    return "fix the site file or the --set values named above and submit again"


def gone(job_id: str) -> JobInfo:
    """What is known of a job Slurm has forgotten: it ended, nothing more."""
    return JobInfo(job_id=job_id, name="", state=states.UNKNOWN, reason=GONE_NOTE)


def _parse_sacct(text: str) -> dict[str, JobInfo]:
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 10:
            continue
        job_id, name, raw, start, end, elapsed, nnodes, nodelist, reason, exit_code = fields[:10]
        jobs[job_id] = JobInfo(
            job_id=job_id,
            name=name,
            state=from_slurm(raw),
            scheduler_state=raw.strip(),
            start=_clean(start),
            end=_clean(end),
            elapsed=_clean(elapsed),
            nodes=_int_or_none(nnodes),
            nodelist=_clean(nodelist),
            reason=_clean(reason),
            exit_code=_clean(exit_code),
        )
    return jobs


def _parse_squeue(text: str) -> dict[str, JobInfo]:
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 10:
            continue
        job_id, name, raw, start, end, elapsed, nnodes, nodelist, reason = fields[:9]
        state = from_slurm(raw)
        jobs[job_id] = JobInfo(
            job_id=job_id,
            name=name,
            state=state,
            scheduler_state=raw.strip(),
            start=_clean(start) if state != states.PENDING else None,
            end=_clean(end) if states.is_finished(state) else None,
            elapsed=_clean(elapsed),
            nodes=_int_or_none(nnodes),
            nodelist=_clean(nodelist),
            reason=_clean(reason),
        )
    return jobs


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _clean(value: str) -> str | None:
    value = value.strip()
    return None if value in _NOT_SET else value


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
