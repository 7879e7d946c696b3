"""Submit, repair, refresh, resume and cancel a campaign's stage graph on a scheduler.

The engine speaks only `JobRequest` and hpcrepro's states to a `hpcrepro.scheduler.base.Scheduler`
(Slurm, local: `scheduler.registry`). Every change to a manifest happens under the campaign lock
(see `manifest.locked`), so two hpcrepro processes never submit the same stage.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from hpcrepro import preflight
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import state as st
from hpcrepro.campaign import verdict
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.state import Job, Manifest, Stage
from hpcrepro.errors import UserError
from hpcrepro.scheduler import registry, states
from hpcrepro.scheduler.base import (
    Backoff,
    Cancelled,
    Dependency,
    JobInfo,
    JobRequest,
    Scheduler,
    SubmitUncertain,
    Unavailable,
)

CRASH_HOOK = "HPCREPRO_TEST_CRASH_AFTER_SBATCH"  # test-only fault point: die right after sbatch
_SAVE_EVERY_S = 2.0


def job_request(
    paths: CampaignPaths,
    manifest: Manifest,
    stage: Stage,
    name: str,
    dependency_ids: Sequence[str] = (),
    scripts_in: Path | None = None,
) -> JobRequest:
    """The job of `stage` named `name` (its token), after `dependency_ids`; its script is read
    from `scripts_in` (the folder being built) when given."""
    return JobRequest(
        name=name,
        script=(scripts_in or paths.root) / stage.script,
        label=stage.name,
        dependency=Dependency(stage.dependency, tuple(dependency_ids)) if dependency_ids else None,
    )


def check_scripts(
    paths: CampaignPaths, manifest: Manifest, backend: Scheduler, scripts_in: Path | None = None
) -> None:
    """Ask the scheduler about one script of each kind (runs differ only by index)."""
    seen: set[str] = set()
    for stage in manifest.stages:
        if stage.kind in seen or stage.state != states.PLANNED:
            continue
        seen.add(stage.kind)
        name = stage.current.token if stage.current else st.token(manifest.key, stage.name, 0)
        backend.test_only(job_request(paths, manifest, stage, name, scripts_in=scripts_in))


def dry_run_requests(paths: CampaignPaths, manifest: Manifest) -> list[JobRequest]:
    """Every stage's first job, its dependencies named by the stages' names (what
    `Scheduler.dry_run` turns into its shell variables)."""
    requests = []
    for stage in manifest.stages:
        name = stage.current.token if stage.current else st.token(manifest.key, stage.name, 1)
        requests.append(job_request(paths, manifest, stage, name, stage.after))
    return requests


def submit_planned(paths: CampaignPaths, manifest: Manifest, backend: Scheduler) -> list[str]:
    """Submit every stage whose current job is planned, in graph order; return their names.

    All of them are first marked `submitting` and saved, so a crash at any point leaves tokens that
    `repair` can look up in the scheduler. A submit that got no answer is settled by `_settle`
    (the job is adopted, or submitted again once the scheduler shows it was never made), never
    taken for a refusal. Jobs waiting to run wake the scheduler at the end (`Scheduler.wake`).
    """
    todo = [s for s in manifest.stages if s.current and s.current.state == states.PLANNED]
    if not todo:
        return []
    for stage in todo:
        stage.jobs[-1].state = states.SUBMITTING
    manifest_io.save(paths.manifest, manifest)
    crash_at = os.environ.get(CRASH_HOOK)
    submitted: list[str] = []
    again: list[tuple[str, str]] = []  # (token, job id) submitted again after no answer
    last_save = time.monotonic()
    try:
        for stage in todo:
            job = stage.jobs[-1]
            ids, blocked = manifest.dependency_ids(stage)
            if blocked:
                job.state, job.reason = states.BLOCKED, blocked
                continue
            request = job_request(paths, manifest, stage, job.token, ids)
            try:
                job_id, resubmitted = _submit_one(paths, manifest, stage, request, backend)
            except NoAnswer:
                raise
            except UserError as error:
                raise _half_submitted(manifest, stage, error) from error
            if crash_at == stage.name:
                os._exit(75)
            job.job_id, job.state, job.scheduler_state = job_id, states.PENDING, None
            job.submitted = st.now()
            submitted.append(stage.name)
            if resubmitted:
                again.append((job.token, job_id))
            if time.monotonic() - last_save > _SAVE_EVERY_S:
                manifest_io.save(paths.manifest, manifest)
                last_save = time.monotonic()
        _cancel_doubles(manifest, backend, again)
    finally:
        # Also when a submit fails midway: the jobs already submitted keep their ids, and the
        # rest stay `submitting` for `repair` to settle.
        manifest_io.save(paths.manifest, manifest)
    wake_if_waiting(paths, manifest, backend)
    return submitted


def wake_if_waiting(paths: CampaignPaths, manifest: Manifest, backend: Scheduler) -> None:
    """Tell the scheduler that jobs wait to run (the local backend then starts its runner,
    which it records in the manifest, saved here)."""
    if any(s.current and s.current.state == states.PENDING for s in manifest.stages):
        runner = manifest.local_runner
        backend.wake()
        if manifest.local_runner is not runner:
            manifest_io.save(paths.manifest, manifest)


class NoAnswer(Unavailable):
    """The scheduler stopped answering during a submit: what is known is in the message."""


def _submit_one(
    paths: CampaignPaths,
    manifest: Manifest,
    stage: Stage,
    request: JobRequest,
    backend: Scheduler,
) -> tuple[str, bool]:
    """Submit `request`, the current job of `stage`: its job id and whether it was submitted
    again after a submit that got no answer; or the refusal, or NoAnswer."""
    paths.stage_script(stage)  # the script must be the campaign's own, reached through no link
    try:
        return backend.submit(request), False
    except SubmitUncertain as error:
        manifest_io.save(paths.manifest, manifest)  # what is queued so far, whatever comes
        settled = _settle(manifest, request, backend)
        if settled is None:
            raise _no_answer(manifest, stage, error, backend) from error
        return settled


def _cancel_doubles(manifest: Manifest, backend: Scheduler, again: list[tuple[str, str]]) -> None:
    """A request the scheduler received while it stalled may still make its job after the lookups
    that found none: cancel every job of a token submitted again but the one recorded."""
    if not again:
        return
    with contextlib.suppress(Unavailable):
        found = backend.find_by_names([token for token, _ in again], _day_before(manifest.created))
        backend.cancel(
            [
                info.job_id
                for token, kept in again
                for info in found.get(token, [])
                if info.job_id != kept and states.is_active(info.state)
            ]
        )


def _settle(manifest: Manifest, request: JobRequest, backend: Scheduler) -> tuple[str, bool] | None:
    """(job id, submitted again) of a job whose submit got no answer, once the scheduler answers:
    the job found under its token, or a new submission when the scheduler twice (a few seconds
    apart, so that a request it received while it stalled is processed first) shows no such job.
    None when it does not answer within the backend's patience."""
    since = _day_before(manifest.created)
    deadline = time.monotonic() + backend.patience
    delays = Backoff(first=1.0, factor=2.0, maximum=15.0)
    absent = 0
    while time.monotonic() < deadline:
        time.sleep(min(delays.next(changed=False), max(0.0, deadline - time.monotonic())))
        try:
            matches = backend.find_by_names([request.name], since).get(request.name, [])
        except Unavailable:
            continue
        if matches:
            keep, extra = matches[0], matches[1:]
            backend.cancel([info.job_id for info in extra if states.is_active(info.state)])
            return keep.job_id, False
        absent += 1
        if absent < 2:
            continue
        try:
            return backend.submit(request), True
        except SubmitUncertain:
            absent = 0
    return None


def _no_answer(manifest: Manifest, stage: Stage, error: UserError, backend: Scheduler) -> NoAnswer:
    """What a submit that the scheduler stopped answering leaves: the jobs queued, the one whose
    fate is unknown, those not submitted, and that `resume` adopts what exists."""
    name, title = manifest.name, backend.title
    queued = [
        (s.name, s.current.job_id)
        for s in manifest.stages
        if s.current
        and s.current.job_id
        and states.is_active(s.current.state)
        and s.current.state != states.SUBMITTING
    ]
    later = [
        s.name
        for s in manifest.stages
        if s is not stage and s.current and s.current.state == states.SUBMITTING
    ]
    shown = ", ".join(f"{n} {i}" for n, i in queued[:6]) + (", ..." if len(queued) > 6 else "")
    lines = [
        f"{title} did not answer while {stage.name} of campaign {name} was submitted "
        f"({error.message}), nor in the {backend.patience:.0f} s after",
        f"queued: {len(queued)} job(s)" + (f" ({shown})" if queued else ""),
        f"not known: whether {title} created {stage.name} (it may have received the request)",
    ]
    if later:
        lines.append("not submitted: " + ", ".join(later))
    return NoAnswer(
        "\n".join(lines),
        hint=f"nothing is lost or doubled: once `scontrol ping` says the controller is UP, "
        f"`hpcrepro resume {name}` adopts {stage.name} if it exists (found by its job name) "
        f"and submits the rest; `hpcrepro cancel {name}` withdraws the queued jobs",
    )


def _half_submitted(manifest: Manifest, refused: Stage, error: UserError) -> UserError:
    """The refusal, plus what it leaves behind when jobs of the campaign are already queued
    (a per-user submit limit is met midway, not by `sbatch --test-only`): the user must know
    that these jobs wait and how to finish or withdraw the campaign."""
    queued = manifest.active_job_ids()
    if not queued:
        return error
    name = manifest.name
    return UserError(
        f"{error.message}\n{len(queued)} job(s) of campaign {name} are already queued; "
        f"{refused.name} and the stages after it are not submitted",
        where=error.where,
        hint=(f"{error.hint}; then " if error.hint else "")
        + f"`hpcrepro resume {name}` submits the rest (once Slurm accepts more jobs), "
        f"or `hpcrepro cancel {name}` withdraws the queued ones",
    )


def repair(manifest: Manifest, backend: Scheduler, paths: CampaignPaths) -> bool:
    """Settle jobs left `submitting` by a crash: adopt the job the scheduler knows by its token,
    or mark it planned again when the submit never ran. Extra jobs with one token are cancelled.

    Without accounting, a Slurm job that ran and ended is gone after MinJobAge, so "no job with
    this token" proves nothing: resubmitting would run the stage twice and overwrite its run log.
    Then the campaign's files decide (see `_ran_unrecorded`): evidence that the job ran makes it
    `unknown` (judged by its log); no evidence means the submit never ran: planned again.
    """
    pending = [(stage, job) for stage, job in manifest.jobs() if job.state == states.SUBMITTING]
    if not pending:
        return False
    since = _day_before(manifest.created)
    found = backend.find_by_names([job.token for _, job in pending], since)
    for stage, job in pending:
        matches = found.get(job.token, [])
        if not matches:
            evidence = None if backend.names_complete else _ran_unrecorded(paths, stage, backend)
            if evidence is None:
                job.state, job.job_id = states.PLANNED, None
            else:
                job.job_id, proof = evidence
                job.state, job.submitted = states.UNKNOWN, job.submitted or st.now()
                job.reason = (
                    f"ended, outcome unknown: its submit was interrupted and {backend.title} "
                    f"keeps no record of the job, but {proof} shows it ran; judged by its log"
                )
            continue
        keep, extra = matches[0], matches[1:]
        backend.cancel([info.job_id for info in extra if states.is_active(info.state)])
        job.job_id, job.submitted = keep.job_id, job.submitted or st.now()
        _apply(job, keep)
    return True


def _ran_unrecorded(
    paths: CampaignPaths, stage: Stage, backend: Scheduler
) -> tuple[str | None, str] | None:
    """(job id or None, the file) when the campaign's files show that a job of `stage` ran that
    the manifest never recorded: a job output file `jobs/STAGE-ID.out` whose ID, of the form the
    backend's ids have, belongs to no recorded job of the stage (the scheduler creates it when
    the job starts), or, for a training stage, a run log (each run index belongs to one stage
    only). None when there is no such evidence."""
    form = registry.job_id_form(backend.name)
    recorded = {job.job_id for job in stage.jobs if job.job_id}
    prefix = stage.name + "-"
    for output in sorted(paths.job_output.glob(f"{stage.name}-*.out")):
        job_id = output.name.removeprefix(prefix).removesuffix(".out")
        if form.pattern.fullmatch(job_id) and job_id not in recorded:
            return job_id, f"its output {output.name}"
    for index in stage.runs:
        log = paths.run_log(index)
        if log.exists():
            return None, f"its run log {log.name}"
    return None


def _day_before(created: str) -> str:
    from datetime import datetime, timedelta

    moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ") - timedelta(days=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _apply(job: Job, info: JobInfo) -> None:
    if info.state == states.UNKNOWN and not info.scheduler_state:
        # a job the scheduler forgot (see slurm.gone): keep what was last known of its times and
        # nodes, but not a scheduler state that is no longer true
        job.state, job.scheduler_state, job.reason = info.state, None, info.reason
        return
    job.state, job.scheduler_state = info.state, info.scheduler_state
    job.start, job.end, job.elapsed = info.start, info.end, info.elapsed
    job.nodes, job.nodelist = info.nodes, info.nodelist
    job.reason, job.exit_code = info.reason, info.exit_code


def apply_infos(paths: CampaignPaths, manifest: Manifest, infos: dict[str, JobInfo]) -> bool:
    """Update jobs from scheduler answers and judge finished runs; True when anything changed."""
    changed = False
    for _, job in manifest.jobs():
        info = infos.get(job.job_id or "")
        if info is None or not states.is_active(job.state):
            continue
        before = (job.state, job.elapsed, job.reason)
        _apply(job, info)
        changed |= before != (job.state, job.elapsed, job.reason)
    return judge_runs(paths, manifest) or changed


def judge_runs(paths: CampaignPaths, manifest: Manifest) -> bool:
    """Give every run of a finished training job its verdict (once)."""
    changed = False
    for stage in manifest.train_stages():
        job = stage.current
        if job is None or not states.is_finished(job.state):
            continue
        for index in stage.runs:
            known = stage.verdicts.get(index)
            if known and known.job_id == job.job_id:
                continue
            stopped = preflight.failure_reason(paths.logs, job.job_id) if job.job_id else None
            if stopped is not None:  # the job's preflight stopped it before any run
                outcome, reason = verdict.NOT_RUN, f"never started: preflight failed: {stopped}"
            else:
                outcome, reason = verdict.judge(
                    paths.run_log(index, job.job_id),
                    job.state,
                    manifest.ruleset,
                    manifest.target_accuracy,
                )
            stage.verdicts[index] = st.Verdict(verdict=outcome, reason=reason, job_id=job.job_id)
            changed = True
    return changed


def refresh(paths: CampaignPaths, manifest: Manifest, backend: Scheduler) -> bool:
    changed = repair(manifest, backend, paths)
    ids = manifest.active_job_ids()
    infos = backend.poll(ids).infos if ids else {}
    return apply_infos(paths, manifest, infos) or changed


def cancel_jobs(
    paths: CampaignPaths, manifest: Manifest, backend: Scheduler, ids: list[str]
) -> Cancelled:
    """Cancel the jobs and record what the scheduler says of them then (the states it gave with
    the cancel, else those of a poll); the survivors stay as they were."""
    outcome = backend.cancel(ids)
    apply_infos(paths, manifest, outcome.infos)
    still = [i for i in manifest.active_job_ids() if i in ids and i not in outcome.survivors]
    if still:
        with contextlib.suppress(Unavailable):
            apply_infos(paths, manifest, backend.poll(still).infos)
    return outcome


def run_counts(manifest: Manifest) -> dict[str, int]:
    """How many runs are valid, still to come (submitted or planned), or lost."""
    counts = {"valid": 0, "coming": 0, "lost": 0}
    for stage in manifest.train_stages():
        state = stage.state
        for index in stage.runs:
            if states.is_active(state) or state == states.PLANNED:
                counts["coming"] += 1
            elif stage.verdict_of(index) == verdict.VALID:
                counts["valid"] += 1
            else:
                counts["lost"] += 1
    return counts


def _ended_badly(stage: Stage) -> bool:
    state = stage.state
    return state != states.COMPLETED and not states.is_active(state) and state != states.PLANNED


def plan_resume(manifest: Manifest) -> list[str]:
    """Plan new jobs for what failed or never ran, until enough valid runs can exist.

    Failed image/prep stages get a new attempt. Each lost run (invalid, void, never ran) not yet
    replaced is replaced by one new run with a fresh index (its log is kept), only as many as are
    missing; the new stage's `replaces` names the runs (`run-NN`) it stands in for.
    Collection runs again after the new runs. Returns the names of stages that got a new job.
    """
    names = manifest.by_name()
    planned: list[str] = []
    for stage in manifest.stages:
        if stage.kind not in (st.TRAIN, "collect") and _ended_badly(stage):
            manifest.plan_attempt(stage)
            planned.append(stage.name)
    counts = run_counts(manifest)
    missing = max(0, manifest.runs_required - counts["valid"] - counts["coming"])
    replaced = replaced_runs(manifest)
    lost = [
        st.run_label(index)
        for stage in manifest.train_stages()
        if not states.is_active(stage.state) and stage.state != states.PLANNED
        for index in stage.runs
        if stage.verdict_of(index) != verdict.VALID and st.run_label(index) not in replaced
    ]
    per_job = max(1, manifest.runs_per_job)
    template = manifest.train_stages()[0]
    collect = names.get("collect")
    insert_at = manifest.stages.index(collect) if collect else len(manifest.stages)
    for start in range(0, missing, per_job):
        count = min(per_job, missing - start)
        first = manifest.next_run_index()
        indices = list(range(first, first + count))
        name = stage_name_for_runs(indices)
        stage = Stage.new(
            name,
            st.TRAIN,
            after=template.after,
            dependency=st.AFTER_OK,
            runs=indices,
            replaces=lost[start : start + count],
        )
        manifest.plan_attempt(stage)
        manifest.stages.insert(insert_at, stage)
        insert_at += 1
        planned.append(name)
    if collect is not None:
        collect.after = [stage.name for stage in manifest.train_stages()]
        new_runs = any(names.get(n) is None for n in planned)
        if new_runs or _ended_badly(collect):
            manifest.plan_attempt(collect)
            planned.append("collect")
    return planned


def replaced_runs(manifest: Manifest) -> set[str]:
    """Runs (`run-NN`) that a replacement already stands in for. A stage's `replaces` lists runs;
    manifests of older versions listed the replaced stage, which stands for all its runs."""
    by_name = manifest.by_name()
    replaced: set[str] = set()
    for stage in manifest.train_stages():
        for label in stage.replaces:
            old = by_name.get(label)
            if old is not None and len(old.runs) > 1:
                replaced.update(st.run_label(index) for index in old.runs)
            else:
                replaced.add(label)
    return replaced


def stage_name_for_runs(indices: list[int]) -> str:
    if len(indices) == 1:
        return st.run_label(indices[0])
    return f"runs-{indices[0]:02d}-{indices[-1]:02d}"


def jobs_to_cancel_on_resume(manifest: Manifest) -> list[str]:
    """Jobs a resume replaces that the scheduler may still run: earlier collection jobs still
    waiting, and void jobs it could start again (requeued or preempted with requeue)."""
    ids = []
    for stage in manifest.stages:
        for index, job in enumerate(stage.jobs):
            if not job.job_id:
                continue
            older_collect = stage.kind == "collect" and index < len(stage.jobs) - 1
            if (older_collect and states.is_active(job.state)) or job.state in (
                states.REQUEUED,
                states.PREEMPTED,
            ):
                ids.append(job.job_id)
    return ids
