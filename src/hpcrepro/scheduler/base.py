"""What a scheduler is to hpcrepro: a job request in, a job id out, states by id, cancel by id.

The campaign speaks only these types and hpcrepro's own states (`scheduler.states`); each backend
(`slurm`, `local`, registered in `scheduler.registry`) turns a `JobRequest` into its own submit
command and its answers back into `JobInfo`. As in submitit, a backend supplies only what differs:
the submit command, how ids and states are read, how jobs are cancelled. The script itself carries
the job's options (`render.sbatch_options` writes them), so a script submitted by hand is the same
job.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from hpcrepro.errors import UserError


@dataclass(frozen=True)
class JobIdForm:
    """What a backend's job ids look like (checked whenever a manifest is read, so a hand-edited
    id never reaches a command line), and for a backend that names its jobs itself the id a job
    token gives."""

    pattern: re.Pattern[str]
    description: str
    from_token: Callable[[str], str] | None = None


@dataclass(frozen=True)
class Dependency:
    """Start only after these jobs: all succeeded (`afterok`) or all ended (`afterany`)."""

    kind: str
    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class JobRequest:
    """One job to submit: what is known only when it is submitted. `name` is what the scheduler
    calls it (a campaign's job token for this attempt, by which an interrupted submit finds it
    again); `label` says what it is to people (the campaign's stage); `dependency` names jobs
    that exist only by then.

    Everything else the job asks for (size, time, output file, requeue policy, environment, the
    site's options) is written in the script itself (`render.sbatch_options`), so a script
    submitted by hand is the same job that a backend submits."""

    name: str
    script: Path
    label: str = ""
    dependency: Dependency | None = None


@dataclass
class JobInfo:
    """What a scheduler says about one job, in hpcrepro's states (`scheduler.states`), with the
    scheduler's own word for it (`scheduler_state`: "CANCELLED by 1000"; None where it has none)."""

    job_id: str
    name: str
    state: str
    scheduler_state: str | None = None
    start: str | None = None
    end: str | None = None
    elapsed: str | None = None
    nodes: int | None = None
    nodelist: str | None = None
    reason: str | None = None
    exit_code: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Poll:
    """The answer to one batched state query: the states it gave, and the jobs whose state it
    could not give (`unanswered`) with the reason (`problem`), when the scheduler did not answer
    for them."""

    infos: dict[str, JobInfo] = field(default_factory=dict)
    unanswered: set[str] = field(default_factory=set)
    problem: str | None = None


@dataclass
class Cancelled:
    """What a cancel did: the jobs' states right after it, what it had to do beyond asking (e.g.
    SIGKILL after SIGTERM) in `notes`, and the jobs it could not stop (`survivors`: id -> why)."""

    infos: dict[str, JobInfo] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    survivors: dict[str, str] = field(default_factory=dict)


class Scheduler(Protocol):
    """A backend. Every method but `dry_run` may raise `Unavailable` (nothing answers)."""

    name: str
    title: str  # for messages: "Slurm"
    # how long a submit waits for a scheduler that does not answer (0: it always answers)
    patience: float
    # one instance serves every campaign (a cluster), or each campaign has its own (a runner)
    per_campaign: bool
    # False when the last find_by_names could not see every job (accounting off): "not found"
    # then does not prove that the submit never ran
    names_complete: bool
    commands: list[str]  # the tool name of every command made, for status and benchmarks

    def check_available(self) -> None: ...
    def check_runtime(self, runtime: str, where: str) -> None: ...
    def test_only(self, request: JobRequest) -> None: ...
    def submit(self, request: JobRequest) -> str: ...
    def wake(self) -> None: ...
    def poll(self, job_ids: Sequence[str]) -> Poll: ...
    def find_by_names(self, names: Sequence[str], since: str) -> dict[str, list[JobInfo]]: ...
    def cancel(self, job_ids: Sequence[str]) -> Cancelled: ...
    def dry_run(self, requests: Sequence[JobRequest]) -> list[str]: ...


class Refused(UserError):
    """The scheduler refused a job script; the message names the script and what it objected to."""

    def __init__(
        self, script: Path, output: str, *, test_only: bool = False, hint: str | None = None
    ) -> None:
        lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
        problem = "; ".join(lines) or "no reason given"
        verb = "would not accept" if test_only else "refused"
        super().__init__(f"{self.title} {verb} {script.name}: {problem}", where=str(script),
                         hint=hint)  # fmt: skip
        self.problem = problem

    title = "the scheduler"


class Unavailable(UserError):
    """No scheduler answers here (no sbatch, or the controller does not respond)."""


class SubmitUncertain(Unavailable):
    """A submit got no answer: whether the scheduler created the job is not known."""


class CancelFailed(Unavailable):
    """The scheduler did not cancel every job: the caller must not record them as cancelled."""

    def __init__(self, first_problem: str, count: int, title: str = "Slurm") -> None:
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(
            f"{title} did not cancel the jobs: {first_problem}{more}",
            hint="hpcrepro changed nothing; run the same command again once `scontrol ping` "
            "says the controller is UP",
        )


class Backoff:
    """Seconds to wait between polls: grows geometrically up to `maximum` while nothing changes,
    back to `first` when something does, each wait with +-`jitter` so many watchers never hit the
    scheduler in step."""

    def __init__(
        self, first: float = 2.0, factor: float = 1.5, maximum: float = 60.0, jitter: float = 0.2
    ) -> None:
        self.first, self.factor, self.maximum, self.jitter = first, factor, maximum, jitter
        self.delay = first

    def next(self, changed: bool) -> float:
        self.delay = self.first if changed else min(self.maximum, self.delay * self.factor)
        return self.delay * random.uniform(1 - self.jitter, 1 + self.jitter)
