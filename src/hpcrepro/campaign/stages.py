"""Stages and their jobs as they are stored in the manifest (plain JSON dicts).

A stage is one node of the graph (image, prep, run-03, collect). Each submission of it is a job
("attempt") carrying a token, `hpcrepro.<campaign>.<stage>.<attempt>`, as its Slurm job name: if
hpcrepro dies between `sbatch` and writing the manifest, the next command finds the job by that
name instead of submitting it twice.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from hpcrepro.scheduler import states

Stage = dict[str, Any]
Job = dict[str, Any]

AFTER_OK = "afterok"
AFTER_ANY = "afterany"
TRAIN = "train"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_stage(
    name: str,
    kind: str,
    script: str,
    *,
    after: list[str] | None = None,
    dependency: str = AFTER_OK,
    runs: list[int] | None = None,
    replaces: list[str] | None = None,
) -> Stage:
    return {
        "name": name,
        "kind": kind,
        "script": script,
        "after": list(after or []),
        "dependency": dependency,
        "runs": list(runs or []),
        "replaces": list(replaces or []),
        "jobs": [],
        "verdicts": {},
    }


def new_id() -> str:
    """A short random id, so that two campaigns of one name (in two log folders, or one deleted
    and submitted again) never share job tokens."""
    return os.urandom(3).hex()


def key(manifest: dict[str, Any]) -> str:
    """The campaign part of job tokens: name and id."""
    return f"{manifest['name']}.{manifest['id']}"


def token(campaign_key: str, stage: str, attempt: int) -> str:
    return f"hpcrepro.{campaign_key}.{stage}.{attempt}"


def current(stage: Stage) -> Job | None:
    """The latest job of a stage, or None when it was never submitted."""
    return stage["jobs"][-1] if stage["jobs"] else None


def state_of(stage: Stage) -> str:
    job = current(stage)
    return job["state"] if job else states.PLANNED


def plan_attempt(manifest: dict[str, Any], stage: Stage) -> Job:
    """Add a new, not yet submitted job to `stage` and return it."""
    attempt = len(stage["jobs"]) + 1
    job: Job = {
        "token": token(key(manifest), stage["name"], attempt),
        "job_id": None,
        "state": states.PLANNED,
        "slurm_state": None,
        "submitted": None,
    }
    stage["jobs"].append(job)
    return job


def by_name(manifest: dict[str, Any]) -> dict[str, Stage]:
    return {stage["name"]: stage for stage in manifest["stages"]}


def dependency_ids(manifest: dict[str, Any], stage: Stage) -> tuple[list[str], str | None]:
    """Job ids `stage` must wait for, or a reason why it can never start.

    Finished dependencies are left out (Slurm may have forgotten those jobs): a completed one is
    satisfied; for `afterok`, one that ended any other way blocks the stage.
    """
    stages = by_name(manifest)
    ids: list[str] = []
    for name in stage["after"]:
        job = current(stages[name])
        state = job["state"] if job else states.PLANNED
        if state in (states.PLANNED, states.BLOCKED) and stage["dependency"] == AFTER_ANY:
            continue
        if state in (states.PLANNED, states.BLOCKED):
            return [], f"{name} was not submitted"
        if states.is_active(state):
            ids.append(job["job_id"])  # type: ignore[index]
        elif state != states.COMPLETED and stage["dependency"] == AFTER_OK:
            return [], f"{name} ended {state}"
    return ids, None


def train_stages(manifest: dict[str, Any]) -> list[Stage]:
    return [stage for stage in manifest["stages"] if stage["kind"] == TRAIN]


def next_run_index(manifest: dict[str, Any]) -> int:
    used = [index for stage in train_stages(manifest) for index in stage["runs"]]
    return max(used, default=0) + 1
