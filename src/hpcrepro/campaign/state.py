"""A campaign's state as typed objects, read from and written to `campaign.json` in one place.

A campaign is a graph of stages (image, prep, run-03, collect); each submission of a stage is a
job ("attempt") carrying a token, `hpcrepro.<campaign>.<id>.<stage>.<attempt>`, as its job name:
if hpcrepro dies between a submit and the manifest write, the next command finds the job by that
name instead of submitting it twice.

hpcrepro writes `campaign.json` itself, so valid JSON of another shape was damaged or edited by
hand. Each field below declares how it is read (`spec`): its JSON key, whether the file must hold
it, what it may be. `Manifest.from_json` reads the whole file through those declarations and the
cross-checks of each object, so a damaged manifest is one error naming the field (never a
KeyError later), and keys this version does not know are kept (a newer hpcrepro may add some).
What a command acts on is checked like user input: a stage runs only `scripts/STAGE.sbatch`
(never `../../x.sh`), a job's token is the one its campaign, stage and attempt give (the name
under which an interrupted submit adopts, or cancels, scheduler jobs), job ids have the form
their backend gives them (an option such as "--user=root" is never one), pids are numbers.

The file keeps the layout of format 1, which older hpcrepro versions read: the scheduler's own
word for a job's state is stored under `slurm_state`, null for backends that have none.
Standard library only: `hpcrepro status` reads it on every call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from hpcrepro.campaign.verdict import VERDICTS
from hpcrepro.errors import UserError
from hpcrepro.rounds import TARGET_ACCURACY
from hpcrepro.rounds import get as round_of
from hpcrepro.scheduler import registry, states
from hpcrepro.scheduler.base import JobIdForm

FORMAT = 1
AFTER_OK = "afterok"
AFTER_ANY = "afterany"
TRAIN = "train"
KINDS = ("image", "prep", TRAIN, "collect")
DEPENDENCIES = (AFTER_OK, AFTER_ANY)
JOB_STATES = tuple(sorted(states.ACTIVE | states.FINISHED | {states.PLANNED}))
# Jobs in these states were accepted by the scheduler, so the engine needs their id.
_HAVE_JOB_ID = (states.PENDING, states.RUNNING, states.SUSPENDED)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_TIME = "%Y-%m-%dT%H:%M:%SZ"
MAX_RUN = 99_999  # far more runs than any campaign makes; keeps run-NN.log a short name
_QUOTE_AT_MOST = 60
HINT = (
    "hpcrepro writes this file itself, so it was damaged or edited by hand: restore it from a "
    "backup, or submit the campaign again under a new name (`hpcrepro submit ... --name NEW`)"
)


def now() -> str:
    return datetime.now(timezone.utc).strftime(_TIME)


def new_id() -> str:
    """A short random id, so that two campaigns of one name (in two log folders, or one deleted
    and submitted again) never share job tokens."""
    return os.urandom(3).hex()


def token(campaign_key: str, stage: str, attempt: int) -> str:
    return f"hpcrepro.{campaign_key}.{stage}.{attempt}"


def run_label(index: int) -> str:
    return f"run-{index:02d}"


# --- how each field is read --------------------------------------------------------------------


class ShapeError(Exception):
    """One field of the manifest is missing or of the wrong kind."""

    def __init__(self, at: str, problem: str) -> None:
        super().__init__(f"{at}: {problem}")
        self.at = at
        self.problem = problem


def damaged(path: Path, error: ShapeError) -> UserError:
    """The user-facing error: the file, the field's JSON path, what is wrong, how to fix it."""
    return UserError(f"damaged manifest: {error.at} {error.problem}", where=str(path), hint=HINT)


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE_AT_MOST else text[: _QUOTE_AT_MOST - 3] + "..."


def _quote(text: str) -> str:
    return _clip(repr(text))


def describe(value: Any) -> str:
    """A value found in the file, for a message: 'the text ...', 'the number 2', 'a list'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {_clip(repr(value))}"
    if isinstance(value, str):
        return f"the text {_quote(value)}"
    return "an object" if isinstance(value, dict) else "a list"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Kind:
    """What a JSON value may be: `test` says whether it is, `what` says it in an error."""

    what: str
    test: Callable[[Any], bool]
    read: Callable[[Any, str], Any] = lambda value, at: value
    write: Callable[[Any], Any] = lambda value: value

    def load(self, value: Any, at: str, nullable: bool) -> Any:
        if not self.test(value):
            what = self.what + (" or null" if nullable else "")
            raise ShapeError(at, f"should be {what}, found {describe(value)}")
        return self.read(value, at)


TEXT = Kind("a text", lambda v: isinstance(v, str))
NON_EMPTY = Kind("a non-empty text", lambda v: isinstance(v, str) and v != "")
NAMED = Kind(
    "a name of letters, digits, '.', '_' and '-' (at most 100)",
    lambda v: isinstance(v, str) and NAME.fullmatch(v) is not None,
)
NUMBER = Kind("a number", lambda v: _is_int(v) or isinstance(v, float))
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
OBJECT = Kind("an object", lambda v: isinstance(v, dict))


def whole(minimum: int) -> Kind:
    return Kind(f"a whole number of at least {minimum}", lambda v: _is_int(v) and v >= minimum)


def one_of(choices: tuple[str, ...]) -> Kind:
    return Kind("one of " + ", ".join(choices), lambda v: isinstance(v, str) and v in choices)


def _read_time(value: str, at: str) -> str:
    try:
        datetime.strptime(value, _TIME)
    except ValueError:
        raise ShapeError(
            at, f"should be a UTC time like 2026-01-31T12:00:00Z, found {describe(value)}"
        ) from None
    return value


TIME = Kind(NON_EMPTY.what, NON_EMPTY.test, _read_time)


def list_of(item: Kind) -> Kind:
    def read(values: list[Any], at: str) -> list[Any]:
        return [item.load(value, f"{at}[{i}]", False) for i, value in enumerate(values)]

    return Kind("a list", lambda v: isinstance(v, list), read, lambda v: [item.write(x) for x in v])


def model(cls: type[Record]) -> Kind:
    return Kind("an object", OBJECT.test, cls.from_json, lambda record: record.to_json())


def spec(
    kind: Kind,
    *,
    key: str | None = None,
    required: bool = True,
    nullable: bool = False,
    emit_none: bool | None = None,
) -> dict[str, Any]:
    """Field metadata: how the value under `key` (default: the field's name) is read; a field
    that is not `required` may be absent, one that is `nullable` may be null. A None value is
    written when the field is required or `emit_none`."""
    return {"spec": (kind, key, required, nullable, required if emit_none is None else emit_none)}


@dataclass(kw_only=True)
class Record:
    """A JSON object of the manifest read through its fields' `spec`; unknown keys are kept in
    `extra` and written back."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    IGNORED: ClassVar[tuple[str, ...]] = ()  # keys of older versions that are dropped when read

    @classmethod
    def from_json(cls, data: Any, at: str = "") -> Any:
        if not isinstance(data, dict):
            raise ShapeError(at or "the manifest", f"should be an object, found {describe(data)}")
        values: dict[str, Any] = {}
        known: set[str] = set()
        for item in fields(cls):
            if "spec" not in item.metadata:
                continue
            kind, key, required, nullable, _ = item.metadata["spec"]
            key = key or item.name
            known.add(key)
            where = f"{at}.{key}" if at else key
            if key not in data:
                if required:
                    raise ShapeError(where, "is missing")
                continue
            value = data[key]
            values[item.name] = (
                None if value is None and nullable else kind.load(value, where, nullable)
            )
        extra = {k: v for k, v in data.items() if k not in known and k not in cls.IGNORED}
        record = cls(**values, extra=extra)
        record.check(at)
        return record

    def check(self, at: str) -> None:
        """Checks across fields, after every field was read."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            if "spec" not in item.metadata:
                continue
            kind, key, _, _, emit_none = item.metadata["spec"]
            value = getattr(self, item.name)
            if value is None and not emit_none:
                continue
            out[key or item.name] = None if value is None else kind.write(value)
        return {**out, **self.extra}


def optional(kind: Kind, *, default: Any = None, nullable: bool = True, **more: Any) -> Any:
    """A field the file may leave out."""
    return field(
        default_factory=lambda: type(default)() if isinstance(default, list | dict) else default,
        metadata=spec(kind, required=False, nullable=nullable, **more),
    )


def required(kind: Kind, *, default: Any = MISSING, nullable: bool = False, **more: Any) -> Any:
    """A field the file must hold (null allowed when `nullable`)."""
    if isinstance(default, list | dict):
        factory = type(default)
        return field(default_factory=factory, metadata=spec(kind, nullable=nullable, **more))
    return field(default=default, metadata=spec(kind, nullable=nullable, **more))


# --- the records ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Verdict(Record):
    """A training run's verdict (see `campaign.verdict`), for the job that ran it."""

    verdict: str = required(one_of(VERDICTS))
    reason: str | None = optional(TEXT)
    job_id: str | None = optional(TEXT)


def _verdict_key(key: str) -> bool:
    return key.isascii() and key.isdigit() and str(int(key)) == key


def _read_verdicts(data: dict[str, Any], at: str) -> dict[int, Verdict]:
    found: dict[int, Verdict] = {}
    for key, judged in data.items():
        where = f"{at}[{_quote(key)}]"
        if not _verdict_key(key):
            raise ShapeError(where, 'is not a run number (verdicts are keyed by run, e.g. "3")')
        found[int(key)] = Verdict.from_json(judged, where)
    return found


VERDICT_MAP = Kind(
    "an object of verdicts by run number",
    OBJECT.test,
    _read_verdicts,
    lambda verdicts: {str(run): judged.to_json() for run, judged in verdicts.items()},
)
RUN = Kind(f"a run number from 1 to {MAX_RUN}", lambda v: _is_int(v) and 1 <= v <= MAX_RUN)
STAGE_NAME = Kind("a stage name", NON_EMPTY.test)


@dataclass(kw_only=True)
class Job(Record):
    """One submission of a stage, as the scheduler last told of it."""

    IGNORED = ("exit_file",)  # older versions recorded the local exit file's path: it is derived

    token: str = required(NON_EMPTY)
    state: str = required(one_of(JOB_STATES), default=states.PLANNED)
    job_id: str | None = required(TEXT, nullable=True, default=None)
    # the scheduler's own word for the state ("CANCELLED by 1000"); format 1 calls it slurm_state
    scheduler_state: str | None = required(TEXT, key="slurm_state", nullable=True, default=None)
    submitted: str | None = required(TEXT, nullable=True, default=None)
    start: str | None = optional(TEXT)
    end: str | None = optional(TEXT)
    elapsed: str | None = optional(TEXT)
    nodelist: str | None = optional(TEXT)
    reason: str | None = optional(TEXT)
    exit_code: str | None = optional(TEXT)
    nodes: int | None = optional(whole(0))
    pid: int | None = optional(whole(1))
    pid_start: int | None = optional(whole(0))

    def check(self, at: str) -> None:
        if self.job_id is None and self.state in _HAVE_JOB_ID:
            raise ShapeError(
                f"{at}.job_id", f"is null, but a {self.state} job has a scheduler job id"
            )


@dataclass(kw_only=True)
class Stage(Record):
    """One node of the graph and its jobs, the latest last."""

    name: str = required(NAMED)
    kind: str = required(one_of(KINDS))
    script: str = required(NON_EMPTY)
    dependency: str = required(one_of(DEPENDENCIES), default=AFTER_OK)
    after: list[str] = required(list_of(STAGE_NAME), default=[])
    replaces: list[str] = required(list_of(STAGE_NAME), default=[])
    runs: list[int] = required(list_of(RUN), default=[])
    jobs: list[Job] = required(list_of(model(Job)), default=[])
    verdicts: dict[int, Verdict] = required(VERDICT_MAP, default={})

    @classmethod
    def new(
        cls,
        name: str,
        kind: str,
        *,
        after: list[str] | None = None,
        dependency: str = AFTER_OK,
        runs: list[int] | None = None,
        replaces: list[str] | None = None,
    ) -> Stage:
        return cls(
            name=name,
            kind=kind,
            script=f"scripts/{name}.sbatch",
            after=list(after or []),
            dependency=dependency,
            runs=list(runs or []),
            replaces=list(replaces or []),
        )

    def check(self, at: str) -> None:
        if self.kind == TRAIN and not self.runs:
            raise ShapeError(f"{at}.runs", "is empty, but a training stage has at least one run")
        _check_verdict_runs(self.verdicts, self.runs, f"{at}.verdicts")

    @property
    def current(self) -> Job | None:
        """The latest job, or None when the stage was never submitted."""
        return self.jobs[-1] if self.jobs else None

    @property
    def state(self) -> str:
        return self.jobs[-1].state if self.jobs else states.PLANNED

    def verdict_of(self, run: int) -> str | None:
        judged = self.verdicts.get(run)
        return judged.verdict if judged else None


def _check_verdict_runs(verdicts: dict[int, Verdict], runs: list[int] | None, at: str) -> None:
    for run in verdicts:
        if runs is not None and run not in runs:
            raise ShapeError(
                f"{at}[{_quote(str(run))}]", f"is not a run of this stage (its runs: {runs})"
            )


@dataclass(kw_only=True)
class Inputs(Record):
    """What the campaign was submitted with."""

    system: str = required(NON_EMPTY)
    version: str = required(NON_EMPTY)
    site: str | None = optional(TEXT, emit_none=True)
    overrides: list[str] = optional(list_of(TEXT), default=[], nullable=False, emit_none=True)


@dataclass(kw_only=True)
class Runner(Record):
    """The local runner process of the campaign: which host, which pid, started when."""

    pid: int = required(whole(1))
    host: str = required(NON_EMPTY)
    start: int | None = optional(whole(0), emit_none=True)


@dataclass(kw_only=True)
class Provenance(Record):
    """What produced the campaign's numbers (`hpcrepro.provenance`): recorded at submit, the
    job-seen versions and nodes added when the campaign is collected. Every field may be absent:
    manifests of older versions have none."""

    hpcrepro_version: str | None = optional(TEXT)
    image: str | None = optional(TEXT)
    image_digest: str | None = optional(TEXT)
    code_repository: str | None = optional(TEXT)
    code_commit: str | None = optional(TEXT)
    code_folder: str | None = optional(TEXT)
    slurm_version: str | None = optional(TEXT)
    site_file: str | None = optional(TEXT)
    site_sha256: str | None = optional(TEXT)
    driver: str | None = optional(TEXT)
    cuda: str | None = optional(TEXT)
    nccl: str | None = optional(TEXT)
    nodes: str | None = optional(TEXT)

    def values(self) -> dict[str, str]:
        return {k: v for k, v in self.to_json().items() if isinstance(v, str)}


ID = Kind(
    "a short id of letters and digits",
    lambda v: isinstance(v, str) and _ID.fullmatch(v) is not None,
)


@dataclass(kw_only=True)
class Manifest(Record):
    """The whole campaign: its identity, what it was submitted with, its stages."""

    name: str = required(NAMED)
    id: str = required(ID)
    fingerprint: str = required(NON_EMPTY)
    created: str = required(TIME)
    backend: str = required(one_of(registry.names()))
    runs_required: int = required(whole(1))
    runs_per_job: int = optional(whole(1), default=1, nullable=False, emit_none=True)
    target_accuracy: float = optional(NUMBER, default=TARGET_ACCURACY, nullable=False)
    target_epoch: float | None = optional(NUMBER, emit_none=True)
    cancelled: bool = optional(BOOLEAN, default=False, nullable=False)
    system: str | None = optional(TEXT, emit_none=True)
    version: str | None = optional(TEXT, emit_none=True)
    inputs: Inputs = required(model(Inputs))
    local_runner: Runner | None = optional(model(Runner), emit_none=True)
    states_checked: str | None = optional(TIME, nullable=False)
    provenance: Provenance | None = optional(model(Provenance))
    stages: list[Stage] = required(list_of(model(Stage)), default=[])

    def check(self, at: str) -> None:
        names: dict[str, int] = {}
        form = registry.job_id_form(self.backend)
        for index, stage in enumerate(self.stages):
            for position, job in enumerate(stage.jobs):
                # job ids go to the scheduler's commands: an option must never pass for one
                if job.job_id is not None and form.pattern.fullmatch(job.job_id) is None:
                    raise ShapeError(
                        f"stages[{index}].jobs[{position}].job_id",
                        f"should be {form.description}, found {describe(job.job_id)}",
                    )
            if stage.name in names:
                raise ShapeError(
                    f"stages[{index}].name",
                    f"{_quote(stage.name)} is also the name of stages[{names[stage.name]}]",
                )
            names[stage.name] = index
        for index, stage in enumerate(self.stages):
            for position, name in enumerate(stage.after):
                if name not in names:
                    raise ShapeError(
                        f"stages[{index}].after[{position}]",
                        f"names no stage of this campaign ({_quote(name)})",
                    )
        if not any(stage.kind == TRAIN for stage in self.stages):
            raise ShapeError("stages", "holds no training stage (kind 'train')")
        for index, stage in enumerate(self.stages):
            self._check_what_it_runs(stage, f"stages[{index}]", form)

    def _check_what_it_runs(self, stage: Stage, at: str, form: JobIdForm) -> None:
        """The script a scheduler runs, the job names under which scheduler jobs are adopted (or
        cancelled as extras) and the ids a backend derives from tokens are the ones hpcrepro
        gives, never ones an editor of the file chose."""
        if stage.script != f"scripts/{stage.name}.sbatch":
            raise ShapeError(
                f"{at}.script",
                f"should be 'scripts/{stage.name}.sbatch' (a stage runs its own script in the "
                f"campaign's scripts folder), found {describe(stage.script)}",
            )
        for position, job in enumerate(stage.jobs):
            expected = token(self.key, stage.name, position + 1)
            if job.token != expected:
                raise ShapeError(
                    f"{at}.jobs[{position}].token",
                    f"should be {expected!r} (campaign, id, stage and attempt), found "
                    f"{describe(job.token)}",
                )
            own = form.from_token(expected) if form.from_token else None
            if own is not None and job.job_id not in (None, own):
                raise ShapeError(
                    f"{at}.jobs[{position}].job_id",
                    f"should be {own!r} (the id its token gives), found {describe(job.job_id)}",
                )

    # --- the graph

    @property
    def key(self) -> str:
        """The campaign part of job tokens: name and id."""
        return f"{self.name}.{self.id}"

    @property
    def ruleset(self) -> str:
        """The compliance ruleset of the campaign's round (`hpcrepro.rounds`): r4.0 -> 4.0.0."""
        return round_of(self.version or self.inputs.version, "the campaign's version").ruleset

    def by_name(self) -> dict[str, Stage]:
        return {stage.name: stage for stage in self.stages}

    def train_stages(self) -> list[Stage]:
        return [stage for stage in self.stages if stage.kind == TRAIN]

    def jobs(self) -> Iterator[tuple[Stage, Job]]:
        for stage in self.stages:
            for job in stage.jobs:
                yield stage, job

    def plan_attempt(self, stage: Stage) -> Job:
        """Add a new, not yet submitted job to `stage` and return it."""
        job = Job(token=token(self.key, stage.name, len(stage.jobs) + 1))
        stage.jobs.append(job)
        return job

    def active_job_ids(self) -> list[str]:
        return [job.job_id for _, job in self.jobs() if job.job_id and states.is_active(job.state)]

    def dependency_ids(self, stage: Stage) -> tuple[list[str], str | None]:
        """Job ids `stage` must wait for, or a reason why it can never start.

        Finished dependencies are left out (the scheduler may have forgotten those jobs): a
        completed one is satisfied; for `afterok`, one that ended any other way blocks the stage.
        """
        stages = self.by_name()
        ids: list[str] = []
        for name in stage.after:
            job = stages[name].current
            state = job.state if job else states.PLANNED
            if state in (states.PLANNED, states.BLOCKED) and stage.dependency == AFTER_ANY:
                continue
            if state in (states.PLANNED, states.BLOCKED):
                return [], f"{name} was not submitted"
            if states.is_active(state) and job is not None and job.job_id:
                ids.append(job.job_id)
            elif state != states.COMPLETED and stage.dependency == AFTER_OK:
                return [], f"{name} ended {state}"
        return ids, None

    def next_run_index(self) -> int:
        used = [index for stage in self.train_stages() for index in stage.runs]
        return max(used, default=0) + 1


def from_json(data: Any) -> Manifest:
    """The manifest in `data` (decoded JSON); ShapeError naming the first field that is wrong."""
    return Manifest.from_json(data)


# --- what `collect` reads of a campaign: its runs' verdicts -----------------------------------


@dataclass(kw_only=True)
class _StageVerdicts(Record):
    runs: list[int] | None = optional(list_of(RUN), nullable=False)
    verdicts: dict[int, Verdict] = optional(VERDICT_MAP, default={}, nullable=False)

    def check(self, at: str) -> None:
        _check_verdict_runs(self.verdicts, self.runs, f"{at}.verdicts")


@dataclass(kw_only=True)
class RunVerdicts(Record):
    """Only what `hpcrepro collect` reads of a manifest: each stage's runs and verdicts, so that
    a manifest damaged elsewhere still lets its logs be scored."""

    stages: list[_StageVerdicts] = required(list_of(model(_StageVerdicts)), default=[])

    def verdicts(self) -> Iterator[tuple[int, Verdict]]:
        for stage in self.stages:
            yield from stage.verdicts.items()
