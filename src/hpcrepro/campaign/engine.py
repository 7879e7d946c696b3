"""Submit, repair, refresh, resume and cancel a campaign's stage graph on a backend.

The backend is `hpcrepro.scheduler.slurm.Slurm` or `hpcrepro.scheduler.local.Local`; both submit a
script with arguments and answer state queries. Every change to a manifest happens under the
campaign lock (see `manifest.locked`), so two hpcrepro processes never submit the same stage.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Protocol

from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import stages as st
from hpcrepro.campaign import verdict
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.errors import UserError
from hpcrepro.rounds import TARGET_ACCURACY
from hpcrepro.scheduler import states
from hpcrepro.scheduler.slurm import JobInfo, SlurmUnavailable, SubmitUncertain

Manifest = dict[str, Any]
CRASH_HOOK = "HPCREPRO_TEST_CRASH_AFTER_SBATCH"  # test-only fault point: die right after sbatch
_SAVE_EVERY_S = 2.0


class Backend(Protocol):
    name: str
    commands: list[str]
    # False when the last find_by_names could not see every job (accounting off): "not found"
    # then does not prove that sbatch never ran
    names_complete: bool
    # how long a submit waits for a scheduler that does not answer (0: it always answers)
    patience: float

    def submit(self, script: Path, args: list[str]) -> str: ...
    def test_only(self, script: Path, args: list[str]) -> None: ...
    def query(self, job_ids: list[str]) -> dict[str, JobInfo]: ...
    def find_by_names(self, names: list[str], since: str) -> dict[str, list[JobInfo]]: ...
    def cancel(self, job_ids: list[str]) -> None: ...


def sbatch_args(
    paths: CampaignPaths,
    manifest: Manifest,
    stage: st.Stage,
    job: st.Job,
    dependency_ids: list[str],
) -> list[str]:
    """Command-line options added to the stage script's own #SBATCH lines."""
    args = [
        f"--job-name={job['token']}",
        # '%' in the folder must reach sbatch as '%%', or it reads a filename pattern
        f"--output={str(paths.job_output).replace('%', '%%')}/{stage['name']}-%j.out",
        f"--comment=hpcrepro campaign={manifest['name']} stage={stage['name']}",
    ]
    if stage["kind"] == st.TRAIN:
        args.append("--no-requeue")  # a requeued run restarts its log: void, so never requeue
    if dependency_ids:
        args.append(f"--dependency={stage['dependency']}:{':'.join(dependency_ids)}")
        args.append("--kill-on-invalid-dep=yes")
    return args


def check_scripts(
    paths: CampaignPaths, manifest: Manifest, backend: Backend, scripts_in: Path | None = None
) -> None:
    """`sbatch --test-only` one script of each kind (runs differ only by index); the scripts are
    read from `scripts_in` (the folder being built) when given."""
    seen: set[str] = set()
    for stage in manifest["stages"]:
        if stage["kind"] in seen or st.state_of(stage) != states.PLANNED:
            continue
        seen.add(stage["kind"])
        job = st.current(stage) or {"token": st.token(st.key(manifest), stage["name"], 0)}
        args = sbatch_args(paths, manifest, stage, job, [])
        backend.test_only((scripts_in or paths.root) / stage["script"], args)


def submit_planned(paths: CampaignPaths, manifest: Manifest, backend: Backend) -> list[str]:
    """Submit every stage whose current job is planned, in graph order; return their names.

    All of them are first marked `submitting` and saved, so a crash at any point leaves tokens that
    `repair` can look up in Slurm. An sbatch that got no answer is settled by `_settle` (the job
    is adopted, or submitted again once Slurm shows it was never made), never taken for a refusal.
    """
    todo = [s for s in manifest["stages"] if s["jobs"] and s["jobs"][-1]["state"] == states.PLANNED]
    if not todo:
        return []
    for stage in todo:
        stage["jobs"][-1]["state"] = states.SUBMITTING
    manifest_io.save(paths.manifest, manifest)
    crash_at = os.environ.get(CRASH_HOOK)
    submitted: list[str] = []
    again: list[tuple[str, str]] = []  # (token, job id) submitted again after no answer
    last_save = time.monotonic()
    try:
        for stage in todo:
            job = stage["jobs"][-1]
            ids, blocked = st.dependency_ids(manifest, stage)
            if blocked:
                job.update(state=states.BLOCKED, reason=blocked)
                continue
            try:
                job_id, resubmitted = _submit_one(paths, manifest, stage, job, backend, ids)
            except NoAnswer:
                raise
            except UserError as error:
                raise _half_submitted(manifest, stage, error) from error
            if crash_at == stage["name"]:
                os._exit(75)
            job.update(job_id=job_id, state=states.PENDING, slurm_state=None, submitted=st.now())
            submitted.append(stage["name"])
            if resubmitted:
                again.append((job["token"], job_id))
            if time.monotonic() - last_save > _SAVE_EVERY_S:
                manifest_io.save(paths.manifest, manifest)
                last_save = time.monotonic()
        _cancel_doubles(manifest, backend, again)
    finally:
        # Also when sbatch fails midway: the jobs already submitted keep their ids, and the
        # rest stay `submitting` for `repair` to settle.
        manifest_io.save(paths.manifest, manifest)
    return submitted


class NoAnswer(SlurmUnavailable):
    """Slurm stopped answering during a submit: what is known is in the message."""


def _submit_one(
    paths: CampaignPaths,
    manifest: Manifest,
    stage: st.Stage,
    job: st.Job,
    backend: Backend,
    dependency_ids: list[str],
) -> tuple[str, bool]:
    """Submit the current job of `stage`: its job id and whether it was submitted again after
    an sbatch that got no answer; or the refusal, or NoAnswer."""
    script = paths.stage_script(stage)
    args = sbatch_args(paths, manifest, stage, job, dependency_ids)
    try:
        return backend.submit(script, args), False
    except SubmitUncertain as error:
        manifest_io.save(paths.manifest, manifest)  # what is queued so far, whatever comes
        settled = _settle(manifest, job, backend, script, args)
        if settled is None:
            raise _no_answer(manifest, stage, error, backend) from error
        return settled


def _cancel_doubles(manifest: Manifest, backend: Backend, again: list[tuple[str, str]]) -> None:
    """A request slurmctld received while it stalled may still make its job after the lookups
    that found none: cancel every job of a token submitted again but the one recorded."""
    if not again:
        return
    with contextlib.suppress(SlurmUnavailable):
        found = backend.find_by_names(
            [token for token, _ in again], _day_before(manifest["created"])
        )
        backend.cancel(
            [
                info.job_id
                for token, kept in again
                for info in found.get(token, [])
                if info.job_id != kept and states.is_active(info.state)
            ]
        )


def _settle(
    manifest: Manifest, job: st.Job, backend: Backend, script: Path, args: list[str]
) -> tuple[str, bool] | None:
    """(job id, submitted again) of a job whose sbatch got no answer, once Slurm answers: the
    job found under its token, or a new submission when Slurm twice (a few seconds apart, so
    that a request the controller received while it stalled is processed first) shows no such
    job. None when Slurm does not answer within the backend's patience."""
    from hpcrepro.scheduler.slurm import Backoff

    since = _day_before(manifest["created"])
    deadline = time.monotonic() + backend.patience
    delays = Backoff(first=1.0, factor=2.0, maximum=15.0)
    absent = 0
    while time.monotonic() < deadline:
        time.sleep(min(delays.next(changed=False), max(0.0, deadline - time.monotonic())))
        try:
            matches = backend.find_by_names([job["token"]], since).get(job["token"], [])
        except SlurmUnavailable:
            continue
        if matches:
            keep, extra = matches[0], matches[1:]
            backend.cancel([info.job_id for info in extra if states.is_active(info.state)])
            return keep.job_id, False
        absent += 1
        if absent < 2:
            continue
        try:
            return backend.submit(script, args), True
        except SubmitUncertain:
            absent = 0
    return None


def _no_answer(manifest: Manifest, stage: st.Stage, error: UserError, backend: Backend) -> NoAnswer:
    """What a submit that Slurm stopped answering leaves: the jobs queued, the one whose fate is
    unknown, those not submitted, and that `resume` adopts what exists."""
    name = manifest["name"]
    queued = [
        (s["name"], s["jobs"][-1]["job_id"])
        for s in manifest["stages"]
        if s["jobs"]
        and s["jobs"][-1]["job_id"]
        and states.is_active(s["jobs"][-1]["state"])
        and s["jobs"][-1]["state"] != states.SUBMITTING
    ]
    later = [
        s["name"]
        for s in manifest["stages"]
        if s is not stage and s["jobs"] and s["jobs"][-1]["state"] == states.SUBMITTING
    ]
    shown = ", ".join(f"{n} {i}" for n, i in queued[:6]) + (", ..." if len(queued) > 6 else "")
    lines = [
        f"Slurm did not answer while {stage['name']} of campaign {name} was submitted "
        f"({error.message}), nor in the {backend.patience:.0f} s after",
        f"queued: {len(queued)} job(s)" + (f" ({shown})" if queued else ""),
        f"not known: whether Slurm created {stage['name']} (it may have received the request)",
    ]
    if later:
        lines.append("not submitted: " + ", ".join(later))
    return NoAnswer(
        "\n".join(lines),
        hint=f"nothing is lost or doubled: once `scontrol ping` says the controller is UP, "
        f"`hpcrepro resume {name}` adopts {stage['name']} if it exists (found by its job name) "
        f"and submits the rest; `hpcrepro cancel {name}` withdraws the queued jobs",
    )


def _half_submitted(manifest: Manifest, refused: st.Stage, error: UserError) -> UserError:
    """The refusal, plus what it leaves behind when jobs of the campaign are already queued
    (a per-user submit limit is met midway, not by `sbatch --test-only`): the user must know
    that these jobs wait in Slurm and how to finish or withdraw the campaign."""
    queued = active_job_ids(manifest)
    if not queued:
        return error
    name = manifest["name"]
    return UserError(
        f"{error.message}\n{len(queued)} job(s) of campaign {name} are already queued; "
        f"{refused['name']} and the stages after it are not submitted",
        where=error.where,
        hint=(f"{error.hint}; then " if error.hint else "")
        + f"`hpcrepro resume {name}` submits the rest (once Slurm accepts more jobs), "
        f"or `hpcrepro cancel {name}` withdraws the queued ones",
    )


def repair(manifest: Manifest, backend: Backend, paths: CampaignPaths) -> bool:
    """Settle jobs left `submitting` by a crash: adopt the job Slurm knows by its token, or mark
    it planned again when sbatch never ran. Extra jobs with one token are cancelled.

    Without accounting, a job that ran and ended is gone from Slurm after MinJobAge, so "no job
    with this token" proves nothing: resubmitting would run the stage twice and overwrite its run
    log. Then the campaign's files decide (see `_ran_unrecorded`): evidence that the job ran makes
    it `unknown` (judged by its log); no evidence means sbatch never ran, and it is planned again.
    """
    pending = [
        (stage, job)
        for stage in manifest["stages"]
        for job in stage["jobs"]
        if job["state"] == states.SUBMITTING
    ]
    if not pending:
        return False
    since = _day_before(manifest["created"])
    found = backend.find_by_names([job["token"] for _, job in pending], since)
    for stage, job in pending:
        matches = found.get(job["token"], [])
        if not matches:
            evidence = None if backend.names_complete else _ran_unrecorded(paths, stage)
            if evidence is None:
                job.update(state=states.PLANNED, job_id=None)
            else:
                job_id, proof = evidence
                job.update(
                    state=states.UNKNOWN,
                    job_id=job_id,
                    submitted=job.get("submitted") or st.now(),
                    reason=f"ended, outcome unknown: its submit was interrupted and Slurm keeps "
                    f"no record of the job, but {proof} shows it ran; judged by its log",
                )
            continue
        keep, extra = matches[0], matches[1:]
        backend.cancel([info.job_id for info in extra if states.is_active(info.state)])
        job.update(job_id=keep.job_id, submitted=job.get("submitted") or st.now())
        _apply(job, keep)
    return True


def _ran_unrecorded(paths: CampaignPaths, stage: st.Stage) -> tuple[str | None, str] | None:
    """(job id or None, the file) when the campaign's files show that a job of `stage` ran that
    the manifest never recorded: a job output file `jobs/STAGE-ID.out` whose ID belongs to no
    recorded job of the stage (Slurm creates it when the job starts), or, for a training stage,
    a run log (each run index belongs to one stage only). None when there is no such evidence."""
    from hpcrepro.scheduler.slurm import JOB_ID

    recorded = {job["job_id"] for job in stage["jobs"] if job["job_id"]}
    prefix = stage["name"] + "-"
    for output in sorted(paths.job_output.glob(f"{stage['name']}-*.out")):
        job_id = output.name.removeprefix(prefix).removesuffix(".out")
        if JOB_ID.fullmatch(job_id) and job_id not in recorded:
            return job_id, f"its output {output.name}"
    for index in stage.get("runs") or []:
        log = paths.run_log(index)
        if log.exists():
            return None, f"its run log {log.name}"
    return None


def _day_before(created: str) -> str:
    from datetime import datetime, timedelta

    moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ") - timedelta(days=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _apply(job: st.Job, info: JobInfo) -> None:
    if info.state == states.UNKNOWN and not info.slurm_state:
        # a job Slurm forgot (see slurm.gone): keep what was last known of its times and nodes,
        # but not a Slurm state that is no longer true
        job.update(state=info.state, slurm_state=None, reason=info.reason)
        return
    job.update(
        state=info.state,
        slurm_state=info.slurm_state,
        start=info.start,
        end=info.end,
        elapsed=info.elapsed,
        nodes=info.nodes,
        nodelist=info.nodelist,
        reason=info.reason,
        exit_code=info.exit_code,
    )


def active_job_ids(manifest: Manifest) -> list[str]:
    return [
        job["job_id"]
        for stage in manifest["stages"]
        for job in stage["jobs"]
        if job["job_id"] and states.is_active(job["state"])
    ]


def apply_infos(paths: CampaignPaths, manifest: Manifest, infos: dict[str, JobInfo]) -> bool:
    """Update jobs from scheduler answers and judge finished runs; True when anything changed."""
    changed = False
    for stage in manifest["stages"]:
        for job in stage["jobs"]:
            info = infos.get(job["job_id"] or "")
            if info is None or not states.is_active(job["state"]):
                continue
            before = (job["state"], job.get("elapsed"), job.get("reason"))
            _apply(job, info)
            changed |= before != (job["state"], job.get("elapsed"), job.get("reason"))
    return judge_runs(paths, manifest) or changed


def judge_runs(paths: CampaignPaths, manifest: Manifest) -> bool:
    """Give every run of a finished training job its verdict (once)."""
    changed = False
    target = float(manifest.get("target_accuracy", TARGET_ACCURACY))
    for stage in st.train_stages(manifest):
        job = st.current(stage)
        state = job["state"] if job else states.PLANNED
        if job is None or not states.is_finished(state):
            continue
        for index in stage["runs"]:
            key = str(index)
            known = stage["verdicts"].get(key)
            if known and known.get("job_id") == job["job_id"]:
                continue
            outcome, reason = verdict.judge(
                paths.run_log(index, job["job_id"]), state, verdict.ruleset_of(manifest), target
            )
            stage["verdicts"][key] = {"verdict": outcome, "reason": reason, "job_id": job["job_id"]}
            changed = True
    return changed


def refresh(paths: CampaignPaths, manifest: Manifest, backend: Backend) -> bool:
    changed = repair(manifest, backend, paths)
    ids = active_job_ids(manifest)
    infos = backend.query(ids) if ids else {}
    return apply_infos(paths, manifest, infos) or changed


def run_counts(manifest: Manifest) -> dict[str, int]:
    """How many runs are valid, still to come (submitted or planned), or lost."""
    counts = {"valid": 0, "coming": 0, "lost": 0}
    for stage in st.train_stages(manifest):
        state = st.state_of(stage)
        for index in stage["runs"]:
            if states.is_active(state) or state == states.PLANNED:
                counts["coming"] += 1
            elif stage["verdicts"].get(str(index), {}).get("verdict") == verdict.VALID:
                counts["valid"] += 1
            else:
                counts["lost"] += 1
    return counts


def plan_resume(manifest: Manifest) -> list[str]:
    """Plan new jobs for what failed or never ran, until enough valid runs can exist.

    Failed image/prep stages get a new attempt. Each lost run (invalid, void, never ran) not yet
    replaced is replaced by one new run with a fresh index (its log is kept), only as many as are
    missing; the new stage's `replaces` names the runs (`run-NN`) it stands in for.
    Collection runs again after the new runs. Returns the names of stages that got a new job.
    """
    names = st.by_name(manifest)
    planned: list[str] = []
    for stage in manifest["stages"]:
        if stage["kind"] in (st.TRAIN, "collect"):
            continue
        state = st.state_of(stage)
        if state != states.COMPLETED and not states.is_active(state) and state != states.PLANNED:
            st.plan_attempt(manifest, stage)
            planned.append(stage["name"])
    counts = run_counts(manifest)
    missing = max(0, manifest["runs_required"] - counts["valid"] - counts["coming"])
    replaced = replaced_runs(manifest)
    lost = [
        run_label(index)
        for stage in st.train_stages(manifest)
        if not states.is_active(st.state_of(stage)) and st.state_of(stage) != states.PLANNED
        for index in stage["runs"]
        if stage["verdicts"].get(str(index), {}).get("verdict") != verdict.VALID
        and run_label(index) not in replaced
    ]
    per_job = max(1, int(manifest.get("runs_per_job", 1)))
    template = st.train_stages(manifest)[0]
    collect = names.get("collect")
    insert_at = manifest["stages"].index(collect) if collect else len(manifest["stages"])
    for start in range(0, missing, per_job):
        count = min(per_job, missing - start)
        first = st.next_run_index(manifest)
        indices = list(range(first, first + count))
        name = stage_name_for_runs(indices)
        stage = st.new_stage(
            name,
            st.TRAIN,
            f"scripts/{name}.sbatch",
            after=template["after"],
            dependency=st.AFTER_OK,
            runs=indices,
            replaces=lost[start : start + count],
        )
        st.plan_attempt(manifest, stage)
        manifest["stages"].insert(insert_at, stage)
        insert_at += 1
        planned.append(name)
    if collect is not None:
        collect["after"] = [stage["name"] for stage in st.train_stages(manifest)]
        state = st.state_of(collect)
        new_runs = any(names.get(n) is None for n in planned)
        if new_runs or (
            state != states.COMPLETED and not states.is_active(state) and state != states.PLANNED
        ):
            st.plan_attempt(manifest, collect)
            planned.append("collect")
    return planned


def run_label(index: int) -> str:
    return f"run-{index:02d}"


def replaced_runs(manifest: Manifest) -> set[str]:
    """Runs (`run-NN`) that a replacement already stands in for. A stage's `replaces` lists runs;
    manifests of older versions listed the replaced stage, which stands for all its runs."""
    by_name = st.by_name(manifest)
    replaced: set[str] = set()
    for stage in st.train_stages(manifest):
        for label in stage["replaces"]:
            old = by_name.get(label)
            if old is not None and len(old["runs"]) > 1:
                replaced.update(run_label(index) for index in old["runs"])
            else:
                replaced.add(label)
    return replaced


def stage_name_for_runs(indices: list[int]) -> str:
    if len(indices) == 1:
        return f"run-{indices[0]:02d}"
    return f"runs-{indices[0]:02d}-{indices[-1]:02d}"


def jobs_to_cancel_on_resume(manifest: Manifest) -> list[str]:
    """Jobs a resume replaces that Slurm may still run: earlier collection jobs still waiting,
    and void jobs that Slurm could start again (requeued or preempted with requeue)."""
    ids = []
    for stage in manifest["stages"]:
        for index, job in enumerate(stage["jobs"]):
            if not job["job_id"]:
                continue
            older_collect = stage["kind"] == "collect" and index < len(stage["jobs"]) - 1
            if (older_collect and states.is_active(job["state"])) or job["state"] in (
                states.REQUEUED,
                states.PREEMPTED,
            ):
                ids.append(job["job_id"])
    return ids
