"""The shape of a campaign manifest, checked whenever one is read.

hpcrepro writes `campaign.json` itself (campaign.plan, the engine, the local runner), so valid JSON
of another shape was damaged or edited by hand. Every command reads fields deep inside it
(`stages[i].jobs[j].state`, verdicts by run index), so the whole shape is checked once, when the
file is loaded: a damaged manifest is one error naming the field, never a KeyError much later.
Keys this version does not know are allowed (a newer hpcrepro may add some).

What a command acts on is checked like user input, since the file may have been edited by hand:
a stage runs only `scripts/STAGE.sbatch` (never `../../x.sh`), a job's token is the one its
campaign, stage and attempt give (the name under which an interrupted submit adopts, or cancels,
Slurm jobs), job ids cannot be options, pids are numbers. Paths of a job's files are never read
from it (see `CampaignPaths.job_files`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcrepro.campaign import stages as st
from hpcrepro.campaign import verdict
from hpcrepro.campaign.layout import NAME
from hpcrepro.errors import UserError
from hpcrepro.scheduler import states
from hpcrepro.scheduler.slurm import JOB_ID as SLURM_JOB_ID

BACKENDS = ("slurm", "local")
KINDS = ("image", "prep", st.TRAIN, "collect")
DEPENDENCIES = (st.AFTER_OK, st.AFTER_ANY)
VERDICTS = (verdict.VALID, verdict.INVALID, verdict.VOID, verdict.NOT_RUN)
JOB_STATES = tuple(sorted(states.ACTIVE | states.FINISHED | {states.PLANNED}))
# Jobs in these states were accepted by the scheduler, so the engine needs their id.
_HAVE_JOB_ID = (states.PENDING, states.RUNNING, states.SUSPENDED)
# What each backend writes as a job id (Slurm: sbatch's id; local: "local:" and the job's token).
JOB_IDS = {"slurm": SLURM_JOB_ID, "local": re.compile(r"local:[A-Za-z0-9._-]+")}
JOB_ID_FORMS = {
    "slurm": 'a Slurm job id (digits, e.g. "4211", "4211_3" or "4211+1")',
    "local": 'a local job id ("local:" and the job\'s token)',
}
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
MAX_RUN = 99_999  # far more runs than any campaign makes; keeps run-NN.log a short name
_QUOTE_AT_MOST = 60
HINT = (
    "hpcrepro writes this file itself, so it was damaged or edited by hand: restore it from a "
    "backup, or submit the campaign again under a new name (`hpcrepro submit ... --name NEW`)"
)


class ShapeError(Exception):
    """One field of the manifest is missing or of the wrong kind."""

    def __init__(self, at: str, problem: str) -> None:
        super().__init__(f"{at}: {problem}")
        self.at = at
        self.problem = problem


def damaged(path: Path, error: ShapeError) -> UserError:
    """The user-facing error: the file, the field's JSON path, what is wrong, how to fix it."""
    return UserError(f"damaged manifest: {error.at} {error.problem}", where=str(path), hint=HINT)


def check(data: dict[str, Any]) -> None:
    """Raise ShapeError unless `data` has the shape hpcrepro writes (see campaign.plan.build)."""
    _named(data, "name", "name")
    _typed(
        data,
        "id",
        "id",
        lambda v: isinstance(v, str) and _ID.fullmatch(v) is not None,
        "a short id of letters and digits",
        False,
        False,
    )
    _name(data, "fingerprint", "fingerprint")
    _timestamp(data, "created", "created")
    _choice(data, "backend", "backend", BACKENDS)
    _integer(data, "runs_required", "runs_required", minimum=1)
    _integer(data, "runs_per_job", "runs_per_job", minimum=1, optional=True)
    _number(data, "target_accuracy", "target_accuracy", optional=True)
    _number(data, "target_epoch", "target_epoch", optional=True, nullable=True)
    _boolean(data, "cancelled", "cancelled", optional=True)
    for key in ("system", "version"):
        _text(data, key, key, optional=True, nullable=True)
    _inputs(_object(data, "inputs", "inputs"))
    runner = _object(data, "local_runner", "local_runner", optional=True, nullable=True)
    if runner:
        _integer(runner, "pid", "local_runner.pid", minimum=1)
        _name(runner, "host", "local_runner.host")
        _integer(runner, "start", "local_runner.start", minimum=0, optional=True, nullable=True)
    _timestamp(data, "states_checked", "states_checked", optional=True)
    stages = _list(data, "stages", "stages")
    names: dict[str, int] = {}
    for index, stage in enumerate(stages):
        at = f"stages[{index}]"
        _stage(_is_object(stage, at), at, data)
        if stage["name"] in names:
            raise ShapeError(
                f"{at}.name",
                f"{_quote(stage['name'])} is also the name of stages[{names[stage['name']]}]",
            )
        names[stage["name"]] = index
    for index, stage in enumerate(stages):
        for position, name in enumerate(stage["after"]):
            if name not in names:
                raise ShapeError(
                    f"stages[{index}].after[{position}]",
                    f"names no stage of this campaign ({_quote(name)})",
                )
    if not any(stage["kind"] == st.TRAIN for stage in stages):
        raise ShapeError("stages", "holds no training stage (kind 'train')")
    for index, stage in enumerate(stages):
        _what_it_runs(stage, f"stages[{index}]", st.key(data), data["backend"])


def _what_it_runs(stage: dict[str, Any], at: str, campaign_key: str, backend: str) -> None:
    """The script a scheduler runs, the job names under which Slurm jobs are adopted (or
    cancelled as extras) and the ids whose processes a local cancel stops are the ones hpcrepro
    gives, never ones an editor of the file chose."""
    from hpcrepro.scheduler.local import job_id_of

    name = stage["name"]
    if stage["script"] != f"scripts/{name}.sbatch":
        raise ShapeError(
            f"{at}.script",
            f"should be 'scripts/{name}.sbatch' (a stage runs its own "
            f"script in the campaign's scripts folder), found "
            f"{_describe(stage['script'])}",
        )
    for position, job in enumerate(stage["jobs"]):
        token = st.token(campaign_key, name, position + 1)
        if job["token"] != token:
            raise ShapeError(
                f"{at}.jobs[{position}].token",
                f"should be {token!r} (campaign, "
                f"id, stage and attempt), found {_describe(job['token'])}",
            )
        if backend == "local" and job["job_id"] not in (None, job_id_of(token)):
            raise ShapeError(
                f"{at}.jobs[{position}].job_id",
                f"should be {job_id_of(token)!r} (the id its token gives), found "
                f"{_describe(job['job_id'])}",
            )


def check_run_verdicts(data: Any) -> None:
    """Only what `hpcrepro collect` reads: each stage's runs and their verdicts."""
    data = _is_object(data, "the manifest")
    for index, stage in enumerate(_list(data, "stages", "stages")):
        at = f"stages[{index}]"
        _is_object(stage, at)
        runs = _runs(stage, at, optional=True)
        if "verdicts" in stage:
            _verdicts(stage["verdicts"], runs, f"{at}.verdicts")


def _inputs(inputs: dict[str, Any]) -> None:
    _name(inputs, "system", "inputs.system")
    _name(inputs, "version", "inputs.version")
    _text(inputs, "site", "inputs.site", optional=True, nullable=True)
    for position, value in enumerate(_list(inputs, "overrides", "inputs.overrides", optional=True)):
        _is(value, f"inputs.overrides[{position}]", isinstance(value, str), "a text")


def _stage(stage: dict[str, Any], at: str, data: dict[str, Any]) -> None:
    _named(stage, "name", f"{at}.name")
    kind = _choice(stage, "kind", f"{at}.kind", KINDS)
    _name(stage, "script", f"{at}.script")
    _choice(stage, "dependency", f"{at}.dependency", DEPENDENCIES)
    for key in ("after", "replaces"):
        for position, value in enumerate(_list(stage, key, f"{at}.{key}")):
            _is(
                value,
                f"{at}.{key}[{position}]",
                isinstance(value, str) and value != "",
                "a stage name",
            )
    runs = _runs(stage, at)
    if kind == st.TRAIN and not runs:
        raise ShapeError(f"{at}.runs", "is empty, but a training stage has at least one run")
    for position, job in enumerate(_list(stage, "jobs", f"{at}.jobs")):
        where = f"{at}.jobs[{position}]"
        _job(_is_object(job, where), where, data["backend"])
    _verdicts(_field(stage, "verdicts", f"{at}.verdicts"), runs, f"{at}.verdicts")


def _runs(stage: dict[str, Any], at: str, optional: bool = False) -> list[int] | None:
    runs = _list(stage, "runs", f"{at}.runs", optional=optional)
    if "runs" not in stage:
        return None
    for position, value in enumerate(runs):
        _is(
            value,
            f"{at}.runs[{position}]",
            _is_int(value) and 1 <= value <= MAX_RUN,
            f"a run number from 1 to {MAX_RUN}",
        )
    return runs


def _job(job: dict[str, Any], at: str, backend: str) -> None:
    _name(job, "token", f"{at}.token")
    state = _choice(job, "state", f"{at}.state", JOB_STATES)
    job_id = _text(job, "job_id", f"{at}.job_id", nullable=True)
    # job ids go to scancel/sacct: an option ("--user=root") must never pass for one
    if job_id is not None and JOB_IDS[backend].fullmatch(job_id) is None:
        raise ShapeError(
            f"{at}.job_id", f"should be {JOB_ID_FORMS[backend]}, found {_describe(job_id)}"
        )
    if job_id is None and state in _HAVE_JOB_ID:
        raise ShapeError(f"{at}.job_id", f"is null, but a {state} job has a scheduler job id")
    for key in ("slurm_state", "submitted"):
        _text(job, key, f"{at}.{key}", nullable=True)
    for key in ("start", "end", "elapsed", "nodelist", "reason", "exit_code"):
        _text(job, key, f"{at}.{key}", optional=True, nullable=True)
    _integer(job, "nodes", f"{at}.nodes", minimum=0, optional=True, nullable=True)
    _integer(job, "pid", f"{at}.pid", minimum=1, optional=True, nullable=True)
    _integer(job, "pid_start", f"{at}.pid_start", minimum=0, optional=True, nullable=True)


def _verdicts(verdicts: Any, runs: list[int] | None, at: str) -> None:
    _is(verdicts, at, isinstance(verdicts, dict), "an object of verdicts by run number")
    for key, judged in verdicts.items():
        where = f"{at}[{_quote(key)}]"
        if not (key.isascii() and key.isdigit() and str(int(key)) == key):
            raise ShapeError(where, 'is not a run number (verdicts are keyed by run, e.g. "3")')
        if runs is not None and int(key) not in runs:
            raise ShapeError(where, f"is not a run of this stage (its runs: {runs})")
        _is_object(judged, where)
        _choice(judged, "verdict", f"{where}.verdict", VERDICTS)
        _text(judged, "reason", f"{where}.reason", optional=True, nullable=True)
        _text(judged, "job_id", f"{where}.job_id", optional=True, nullable=True)


# --- one field of one kind


def _field(obj: dict[str, Any], key: str, at: str) -> Any:
    if key not in obj:
        raise ShapeError(at, "is missing")
    return obj[key]


def _typed(
    obj: dict[str, Any],
    key: str,
    at: str,
    test: Callable[[Any], bool],
    what: str,
    optional: bool,
    nullable: bool,
) -> Any:
    if optional and key not in obj:
        return None
    value = _field(obj, key, at)
    if value is None and nullable:
        return None
    _is(value, at, test(value), what + (" or null" if nullable else ""))
    return value


def _name(obj: dict[str, Any], key: str, at: str) -> Any:
    """A text that names something (a campaign, a stage, a script): never empty."""
    return _typed(
        obj, key, at, lambda v: isinstance(v, str) and v != "", "a non-empty text", False, False
    )


def _named(obj: dict[str, Any], key: str, at: str) -> Any:
    """A campaign or stage name: it goes into file names and Slurm job names."""
    return _typed(
        obj,
        key,
        at,
        lambda v: isinstance(v, str) and NAME.fullmatch(v) is not None,
        "a name of letters, digits, '.', '_' and '-' (at most 100)",
        False,
        False,
    )


def _text(
    obj: dict[str, Any], key: str, at: str, optional: bool = False, nullable: bool = False
) -> Any:
    return _typed(obj, key, at, lambda v: isinstance(v, str), "a text", optional, nullable)


def _timestamp(obj: dict[str, Any], key: str, at: str, optional: bool = False) -> None:
    from datetime import datetime

    if optional and key not in obj:
        return
    value = _name(obj, key, at)
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise ShapeError(
            at, f"should be a UTC time like 2026-01-31T12:00:00Z, found {_describe(value)}"
        ) from None


def _choice(obj: dict[str, Any], key: str, at: str, choices: tuple[str, ...]) -> Any:
    value = _field(obj, key, at)
    _is(
        value,
        at,
        value in choices if isinstance(value, str) else False,
        "one of " + ", ".join(choices),
    )
    return value


def _integer(
    obj: dict[str, Any],
    key: str,
    at: str,
    minimum: int,
    optional: bool = False,
    nullable: bool = False,
) -> Any:
    return _typed(
        obj,
        key,
        at,
        lambda v: _is_int(v) and v >= minimum,
        f"a whole number of at least {minimum}",
        optional,
        nullable,
    )


def _number(
    obj: dict[str, Any], key: str, at: str, optional: bool = False, nullable: bool = False
) -> Any:
    return _typed(
        obj, key, at, lambda v: _is_int(v) or isinstance(v, float), "a number", optional, nullable
    )


def _boolean(obj: dict[str, Any], key: str, at: str, optional: bool = False) -> Any:
    return _typed(obj, key, at, lambda v: isinstance(v, bool), "true or false", optional, False)


def _list(obj: dict[str, Any], key: str, at: str, optional: bool = False) -> list[Any]:
    value = _typed(obj, key, at, lambda v: isinstance(v, list), "a list", optional, False)
    return value if value is not None else []


def _object(
    obj: dict[str, Any], key: str, at: str, optional: bool = False, nullable: bool = False
) -> Any:
    return _typed(obj, key, at, lambda v: isinstance(v, dict), "an object", optional, nullable)


def _is_object(value: Any, at: str) -> dict[str, Any]:
    _is(value, at, isinstance(value, dict), "an object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is(value: Any, at: str, ok: bool, what: str) -> None:
    if not ok:
        raise ShapeError(at, f"should be {what}, found {_describe(value)}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {_clip(repr(value))}"
    if isinstance(value, str):
        return f"the text {_quote(value)}"
    return "an object" if isinstance(value, dict) else "a list"


def _quote(text: str) -> str:
    return _clip(repr(text))


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE_AT_MOST else text[: _QUOTE_AT_MOST - 3] + "..."
