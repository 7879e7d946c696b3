"""What `hpcrepro submit/status/cancel/resume` do, independent of the command line.

Every action gets its scheduler from `scheduler.registry` by the name the manifest records and
speaks to it through `scheduler.base.Scheduler` only: nothing here knows which backend it is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcrepro.campaign import engine, folder, layout
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import state as st
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.runner import CampaignLink
from hpcrepro.campaign.state import Manifest
from hpcrepro.errors import UserError
from hpcrepro.safeopen import cannot_write
from hpcrepro.scheduler import registry, states
from hpcrepro.scheduler.base import Scheduler, Unavailable

if TYPE_CHECKING:
    from hpcrepro.site import Site

# test-only fault point: die at "partial" (folder begun), "scripts" (written) or "manifest"
# (written, folder not yet in place)
CRASH_HOOK = "HPCREPRO_TEST_CRASH_IN_SUBMIT"


def _crash_point(point: str) -> None:
    if os.environ.get(CRASH_HOOK) == point:
        os._exit(75)


@dataclass
class SubmitRequest:
    system: str
    version: str
    site: Path | None = None
    overrides: list[str] = field(default_factory=list)
    name: str | None = None
    runs: int | None = None
    runs_per_job: int = 1
    backend: str = "slurm"
    dry_run: bool = False


@dataclass
class Outcome:
    paths: CampaignPaths
    manifest: Manifest | None  # None when no campaign is left (a half-made one removed)
    lines: list[str]
    submitted: list[str] = field(default_factory=list)
    exit_code: int = 0


def scheduler_for(paths: CampaignPaths, manifest: Manifest) -> Scheduler:
    """The campaign's scheduler, seeing `manifest` (the object the caller changes and saves)."""
    return registry.make(manifest.backend, CampaignLink(paths, manifest))


def submit(request: SubmitRequest) -> Outcome:
    """Create the campaign and submit its whole graph; a second submit submits nothing twice.

    The campaign folder is built beside its place and renamed into it once complete (see
    `campaign.folder`); its jobs are submitted only then, under the campaign lock.
    """
    from hpcrepro.campaign import plan
    from hpcrepro.config import resolve, run_count

    cfg = resolve(request.system, request.version, request.site, list(request.overrides))
    runs = run_count(cfg, request.runs)
    if request.runs_per_job < 1:
        raise UserError("--runs-per-job must be at least 1", where="--runs-per-job")
    name = layout.check_name(request.name or f"{request.system}-{request.version}")
    paths = CampaignPaths(cfg.site.log_dir / name)
    link = CampaignLink(paths, None)
    backend = registry.make(request.backend, link)
    # refuse what the backend cannot run before anything is written
    backend.check_runtime(
        cfg.site.runtime, f"site key 'runtime' (from {cfg.origin_of('site.runtime')})"
    )
    unchecked = None
    try:
        backend.check_available()
    except Unavailable as error:
        if not request.dry_run:
            raise
        unchecked = f"# {error.message}: scripts not checked with sbatch --test-only"
    needs_prep = plan.dataset_needs_prep(cfg)
    inputs = st.Inputs(
        system=request.system,
        version=request.version,
        site=str(cfg.site_path) if cfg.site_path else None,
        overrides=list(request.overrides),
    )
    wanted = plan.fingerprint(cfg, runs, request.runs_per_job, request.backend)
    with layout.claiming(name, paths.root) as claim:
        if paths.manifest.exists():
            return _submit_again(request, paths, wanted)
        for old in folder.leftovers(paths.root):  # of submits killed before (we hold the name)
            folder.remove(old)
        try:
            partial = folder.make_partial(paths.root)
        except OSError as error:
            raise UserError(
                f"cannot create the campaign folder {paths.root} ({error.strerror or error})",
                where="site key 'log_dir'",
                hint="set log_dir to a shared folder you can write to",
            ) from error
        try:
            folder.write_request(partial, _request_record(request, cfg.site_path, name))
            if not request.dry_run:
                claim.record()  # from here, status NAME finds what a killed submit leaves
            _crash_point("partial")
            manifest = plan.build(
                cfg,
                paths,
                name,
                runs,
                request.runs_per_job,
                request.backend,
                inputs,
                prep=needs_prep,
                into=partial,
            )
            link.manifest = manifest
            _crash_point("scripts")
            if unchecked is None:
                engine.check_scripts(paths, manifest, backend, scripts_in=partial)
            if request.dry_run:
                folder.mark_dry_run(partial)
                folder.publish(partial, paths.root)
                lines = dry_run_lines(paths, manifest, backend, dataset_note(cfg.site, needs_prep))
                return Outcome(paths, manifest, [unchecked, *lines] if unchecked else lines)
            manifest_io.save(partial / paths.manifest.name, manifest)
            _crash_point("manifest")
            folder.publish(partial, paths.root)
        except OSError as error:
            folder.remove(partial)
            raise cannot_write(partial, error) from None
        except BaseException:
            folder.remove(partial)
            raise
        claim.keep()  # the campaign exists now, whatever happens to its submission
        return _submit_published(paths, "submitted {count} job(s)")


def _submit_published(paths: CampaignPaths, note: str) -> Outcome:
    """Submit the planned jobs of a campaign whose folder is complete."""
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        submitted = engine.submit_planned(paths, manifest, scheduler_for(paths, manifest))
    return Outcome(
        paths,
        manifest,
        [
            f"campaign {manifest.name}: {note.format(count=len(submitted))}",
            f"folder: {paths.root}",
        ],
        submitted,
    )


def _request_record(request: SubmitRequest, site: Path | None, name: str) -> dict[str, Any]:
    """What `resume` needs to do an interrupted submit again (see `folder.REQUEST`)."""
    return {
        "system": request.system,
        "version": request.version,
        "site": str(site) if site else None,
        "overrides": list(request.overrides),
        "name": name,
        "runs": request.runs,
        "runs_per_job": request.runs_per_job,
        "backend": request.backend,
    }


def _request_from(record: dict[str, Any] | None) -> SubmitRequest | None:
    """The recorded request, None unless every field has the type submit writes."""
    if record is None:
        return None
    texts = all(isinstance(record.get(k), str) for k in ("system", "version", "name", "backend"))
    site = record.get("site")
    overrides = record.get("overrides")
    runs = record.get("runs")
    per_job = record.get("runs_per_job")
    if not (
        texts
        and (site is None or isinstance(site, str))
        and isinstance(overrides, list)
        and all(isinstance(o, str) for o in overrides)
        and (runs is None or (isinstance(runs, int) and not isinstance(runs, bool)))
        and isinstance(per_job, int)
        and not isinstance(per_job, bool)
    ):
        return None
    return SubmitRequest(
        system=record["system"],
        version=record["version"],
        site=Path(site) if site else None,
        overrides=overrides,
        name=record["name"],
        runs=runs,
        runs_per_job=per_job,
        backend=record["backend"],
    )


def _submit_again(request: SubmitRequest, paths: CampaignPaths, wanted: str) -> Outcome:
    """A submit of a campaign that exists: submit only what an interrupted submit left over."""
    manifest = manifest_io.load(paths.manifest)
    name = manifest.name
    if manifest.fingerprint != wanted:
        raise UserError(
            f"campaign '{name}' already exists in {paths.root} with another configuration",
            hint="choose a new name with --name, or `hpcrepro resume " + name + "`",
        )
    if request.dry_run:
        return Outcome(paths, manifest, [f"# campaign {name} is already submitted"])
    if manifest.cancelled:
        return Outcome(
            paths,
            manifest,
            [
                f"campaign {name} was cancelled: nothing submitted",
                f"to run what is left of it: hpcrepro resume {name}",
            ],
        )
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        backend = scheduler_for(paths, manifest)
        engine.refresh(paths, manifest, backend)
        submitted = engine.submit_planned(paths, manifest, backend)
    note = (
        f"submitted {len(submitted)} stage(s) left over by an interrupted submit"
        if submitted
        else "already submitted: nothing to do"
    )
    return Outcome(paths, manifest, [f"campaign {name}: {note}"], submitted)


def finish_half_made(half: layout.HalfMade) -> Outcome:
    """`resume` of a campaign whose submit was interrupted before its folder was complete:
    put the complete folder in place and submit it, or submit the recorded request again, or,
    when nothing usable is left, remove the leftovers (no job of it was ever submitted)."""
    if half.busy:
        raise half
    paths = CampaignPaths(half.root)
    with layout.claiming(half.name, half.root) as claim:
        if paths.manifest.exists():  # finished by another process meanwhile
            return _submit_published(paths, "submitted {count} job(s)")
        left = folder.leftovers(half.root)
        complete = next((p for p in left if _complete(p, half.name)), None)
        if complete is not None:
            registry.make(manifest_io.load(complete / "campaign.json").backend).check_available()
            folder.publish(complete, half.root)
            claim.keep()
            for other in left:
                if other != complete:
                    folder.remove(other)
            return _submit_published(
                paths, "finished its interrupted submit: submitted {count} job(s)"
            )
        request = next(
            (r for r in (_request_from(folder.read_request(p)) for p in left) if r), None
        )
        for other in left:
            folder.remove(other)
        layout.forget(half.name, half.root)
    if request is not None and request.name == half.name:
        outcome = submit(request)
        outcome.lines[0] = outcome.lines[0] + " (its interrupted submit, done again)"
        return outcome
    return Outcome(
        paths,
        None,
        [
            f"campaign {half.name}: removed what its interrupted submit left (no job of it had "
            "been submitted); submit it again with `hpcrepro submit`",
        ],
    )


def remove_half_made(half: layout.HalfMade) -> Outcome:
    """`cancel` of a half-made campaign: remove what its submit left (nothing was submitted)."""
    if half.busy:
        raise half
    with layout.claiming(half.name, half.root):
        if (half.root / "campaign.json").exists():
            raise UserError(
                f"campaign {half.name} was completed meanwhile",
                hint=f"run `hpcrepro cancel {half.name}` again",
            )
        left = folder.leftovers(half.root)
        for other in left:
            folder.remove(other)
        layout.forget(half.name, half.root)
    return Outcome(
        CampaignPaths(half.root),
        None,
        [
            f"campaign {half.name}: removed what its interrupted submit left "
            f"({len(left)} folder(s)); no job of it had been submitted",
        ],
    )


def _complete(partial: Path, name: str) -> bool:
    """Whether an interrupted submit got as far as writing the manifest (its last file)."""
    if folder.OLD in partial.name:
        return False
    try:
        manifest = manifest_io.load(partial / "campaign.json")
    except UserError:
        return False
    return manifest.name == name and all(
        (partial / stage.script).is_file() for stage in manifest.stages
    )


def dry_run_lines(
    paths: CampaignPaths, manifest: Manifest, backend: Scheduler, dataset: str | None = None
) -> list[str]:
    """The graph and what the scheduler would be told (`Scheduler.dry_run`: the exact sbatch
    commands, or the commands the local runner runs), runnable as a shell script."""
    lines = [
        f"# campaign {manifest.name} in {paths.root} (dry run: nothing submitted)",
        "# graph: " + graph_text(manifest),
    ]
    if dataset:
        lines.append(dataset)
    return lines + backend.dry_run(engine.dry_run_requests(paths, manifest))


def dataset_note(site: Site, needs_prep: bool) -> str:
    """One comment line: where the data set comes from (no prep stage when it is ready).
    Paths are written with repr(), so that no character in them can end the comment."""
    dataset = str(site.dataset_dir)
    if needs_prep:
        return f"# dataset: the prep stage makes {dataset!r} from {str(site.imagenet_dir)!r}"
    return f"# dataset: {dataset!r} is prepared: no prep stage"


def graph_text(manifest: Manifest) -> str:
    parts = []
    for stage in manifest.stages:
        after = f" ({stage.dependency} {', '.join(stage.after)})" if stage.after else ""
        parts.append(stage.name + after)
    return "; ".join(parts)


# --- status

Campaigns = list[tuple[CampaignPaths, Manifest]]


def load_campaigns(
    campaign: str | None, on_damaged: Callable[[str, UserError], None] | None = None
) -> Campaigns:
    """One campaign, or every known one; a damaged manifest or index entry among all of them is
    passed to `on_damaged` (name, error) and left out, so one broken campaign cannot hide the
    others."""
    if campaign:
        paths = layout.find(campaign)
        return [(paths, manifest_io.load(paths.manifest))]
    found = []
    for name, root in layout.known_campaigns(on_damaged).items():
        paths = CampaignPaths(root)
        try:
            found.append((paths, manifest_io.load(paths.manifest)))
        except UserError as error:
            if on_damaged is not None:
                on_damaged(name, error)
    return found


@dataclass
class StatusPass:
    """What one status pass learnt besides the states it saved: the jobs whose state the
    scheduler did not give and why (by campaign folder), the campaigns whose update could not be
    written, and the schedulers that serve every campaign (kept for the next pass)."""

    shared: dict[str, Scheduler] = field(default_factory=dict)
    unknown: dict[Path, list[str]] = field(default_factory=dict)
    problems: dict[Path, str] = field(default_factory=dict)
    not_saved: dict[Path, str] = field(default_factory=dict)


CHECKED_EVERY_S = 60  # how often an unchanged campaign records that its scheduler still answers


def refresh_all(campaigns: Campaigns, previous: StatusPass | None = None) -> StatusPass:
    """One status pass: one poll for the active jobs of every campaign a shared scheduler serves
    (Slurm: one sacct, plus one squeue for jobs still going), one per campaign that has its own
    (a local runner), then save what changed, replacing the entries of `campaigns` with what was
    saved. A campaign whose jobs a shared scheduler answered for records when
    (`states_checked`), so that when it does not answer, status can say how old its states are."""
    result = StatusPass(shared=previous.shared if previous else {})
    backends = []
    for paths, manifest in campaigns:
        backend = scheduler_for(paths, manifest)
        if not backend.per_campaign:
            backend = result.shared.setdefault(manifest.backend, backend)
        backends.append(backend)
    polls: dict[int, Any] = {}
    for backend in {id(b): b for b in backends if not b.per_campaign}.values():
        ids = [
            job_id
            for (_, manifest), used in zip(campaigns, backends, strict=True)
            if used is backend
            for job_id in manifest.active_job_ids()
        ]
        polls[id(backend)] = _poll(backend, ids)
    now = st.now()
    for index, ((paths, manifest), backend) in enumerate(zip(campaigns, backends, strict=True)):
        active = manifest.active_job_ids()
        poll = _poll(backend, active) if backend.per_campaign else polls[id(backend)]
        changed = engine.apply_infos(paths, manifest, poll.infos)
        checked = None
        unknown = [job_id for job_id in active if job_id in poll.unanswered]
        if unknown:
            result.unknown[paths.root] = unknown
            result.problems[paths.root] = poll.problem or "no answer"
        elif (
            not backend.per_campaign
            and active
            and (changed or _older_than(manifest.states_checked, now))
        ):
            checked = now
        needs_repair = any(job.state == states.SUBMITTING for _, job in manifest.jobs())
        if changed or needs_repair or checked:
            try:
                fresh = _save_if_free(paths, poll.infos, backend, needs_repair, checked)
            except (UserError, OSError) as error:  # e.g. a full disk: show, do not save
                text = (
                    error.message
                    if isinstance(error, UserError)
                    else (f"cannot write {paths.lock} ({error.strerror or error})")
                )
                result.not_saved[paths.root] = text
            else:
                if fresh is not None:
                    campaigns[index] = (paths, fresh)
    return result


def _poll(backend: Scheduler, ids: list[str]) -> Any:
    from hpcrepro.scheduler.base import Poll

    if not ids:
        return Poll()
    try:
        return backend.poll(ids)
    except Unavailable as error:
        return Poll(unanswered=set(ids), problem=error.message)


def _older_than(stamp: str | None, now: str) -> bool:
    from datetime import datetime

    if not stamp:
        return True
    moment = "%Y-%m-%dT%H:%M:%SZ"
    gap = datetime.strptime(now, moment) - datetime.strptime(stamp, moment)
    return gap.total_seconds() >= CHECKED_EVERY_S


def _save_if_free(
    paths: CampaignPaths,
    infos: dict[str, Any],
    backend: Scheduler,
    repair: bool,
    checked: str | None,
) -> Manifest | None:
    """Write status updates unless another process holds the lock (it will write its own): the
    manifest saved, None when nothing was. On a full disk nothing is written (OSError or
    UserError): the reserve is left for cancel."""
    with manifest_io.try_locked(paths.lock) as got:
        if not got:
            return None
        fresh = manifest_io.load(paths.manifest)
        if backend.per_campaign:  # it reads the campaign itself: ask it about this version
            backend = scheduler_for(paths, fresh)
            infos = _poll(backend, fresh.active_job_ids()).infos
        if repair:
            # when the scheduler does not answer, the next command that reaches it repairs
            with contextlib.suppress(Unavailable):
                engine.repair(fresh, backend, paths)
        engine.apply_infos(paths, fresh, infos)
        if checked:
            fresh.states_checked = checked
        manifest_io.save(paths.manifest, fresh, reserve=False)
        return fresh


def short_of_runs(manifest: Manifest) -> bool:
    """Whether the campaign can no longer reach its required valid runs without `resume`."""
    counts = engine.run_counts(manifest)
    return counts["valid"] + counts["coming"] < manifest.runs_required


# --- cancel and resume


def cancel(campaign: str) -> Outcome:
    """Cancel every job of the campaign that has not ended. On a full disk the lock and the
    manifest use the reserve (see `manifest`); when even that fails, the jobs are cancelled all
    the same and the error says that only the record is missing."""
    try:
        paths = layout.find(campaign)
    except layout.HalfMade as half:
        return remove_half_made(half)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(manifest_io.locked(paths.lock))
        except manifest_io.NoSpace as error:
            manifest = manifest_io.load(paths.manifest)
            backend = scheduler_for(paths, manifest)
            engine.refresh(paths, manifest, backend)
            ids = manifest.active_job_ids()
            backend.cancel(ids)
            raise _not_recorded(manifest, ids, error) from None
        manifest = manifest_io.load(paths.manifest)
        backend = scheduler_for(paths, manifest)
        engine.refresh(paths, manifest, backend)
        ids = manifest.active_job_ids()
        if not ids and not any(s.state == states.PLANNED for s in manifest.stages):
            with contextlib.suppress(UserError):  # the refresh, if there is room for it
                manifest_io.save(paths.manifest, manifest, reserve=False)
            return Outcome(
                paths,
                manifest,
                [f"campaign {manifest.name}: nothing to cancel (every job has ended)"],
            )
        outcome = engine.cancel_jobs(paths, manifest, backend, ids)
        manifest.cancelled = True
        for stage in manifest.stages:
            if stage.current and stage.current.state == states.PLANNED:
                stage.current.state = states.CANCELLED
        engine.judge_runs(paths, manifest)
        try:
            manifest_io.save(paths.manifest, manifest)
        except UserError as error:
            raise _not_recorded(manifest, ids, error) from None
    survivors = outcome.survivors
    stopped = [job_id for job_id in ids if job_id not in survivors]
    lines = [f"campaign {manifest.name}: cancelled {len(stopped)} job(s)"]
    lines += [f"note: {note}" for note in outcome.notes]
    lines += [f"still running after SIGKILL: {what}: {left}" for what, left in survivors.items()]
    return Outcome(paths, manifest, lines, exit_code=1 if survivors else 0)


def _not_recorded(manifest: Manifest, ids: list[str], error: UserError) -> UserError:
    name = manifest.name
    return UserError(
        f"cancelled {len(ids)} job(s) of campaign {name}, but could not record it: {error.message}",
        where=error.where,
        hint=f"the jobs are stopped; once there is room again, `hpcrepro status {name}` "
        "records their end" + (f" ({error.hint})" if error.hint else ""),
    )


def resume(campaign: str) -> Outcome:
    """Submit replacements for what failed or never ran, until enough valid runs can exist; a
    half-made campaign is finished (see `finish_half_made`)."""
    try:
        paths = layout.find(campaign)
    except layout.HalfMade as half:
        return finish_half_made(half)
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        backend = scheduler_for(paths, manifest)
        backend.check_available()
        engine.refresh(paths, manifest, backend)
        manifest.cancelled = False
        for stage in manifest.stages:  # cancelled before submission: plan them again
            job = stage.current
            if job and job.state == states.CANCELLED and not job.job_id:
                job.state = states.PLANNED
        planned = engine.plan_resume(manifest)
        new_stages = [
            s for s in manifest.stages if s.name in planned and not (paths.root / s.script).exists()
        ]
        if new_stages:
            from hpcrepro.campaign import plan

            cfg = plan.stored_config(paths, manifest)
            for stage in new_stages:
                plan.write_script(cfg, paths, manifest, stage, manifest.backend)
        backend.cancel(engine.jobs_to_cancel_on_resume(manifest))
        submitted = engine.submit_planned(paths, manifest, backend)
    counts = engine.run_counts(manifest)
    note = f"submitted {', '.join(submitted)}" if submitted else "nothing to resubmit"
    return Outcome(
        paths,
        manifest,
        [
            f"campaign {manifest.name}: {note}",
            f"runs: {counts['valid']} valid, {counts['coming']} to come, {counts['lost']} lost, "
            f"{manifest.runs_required} required",
        ],
        submitted,
    )
