"""What `hpcrepro submit/status/cancel/resume` do, independent of the command line."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcrepro.campaign import engine, layout
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import stages as st
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.errors import UserError
from hpcrepro.scheduler import states
from hpcrepro.scheduler.slurm import Slurm, SlurmUnavailable

if TYPE_CHECKING:
    from hpcrepro.site import Site

BACKENDS = ("slurm", "local")


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
    manifest: dict[str, Any]
    lines: list[str]
    submitted: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def make_backend(name: str, manifest: dict[str, Any] | None = None) -> engine.Backend:
    if name == "local":
        from hpcrepro.scheduler.local import Local

        return Local(manifest if manifest is not None else {"stages": []})
    if name == "slurm":
        return Slurm()
    raise UserError(f"unknown backend '{name}'", hint="use --backend slurm or --backend local")


def _after_submit(paths: CampaignPaths, manifest: dict[str, Any], backend: engine.Backend) -> None:
    if manifest["backend"] == "local" and any(
        s["jobs"] and s["jobs"][-1]["state"] == states.PENDING for s in manifest["stages"]
    ):
        from hpcrepro.scheduler.local import Local

        assert isinstance(backend, Local)
        backend.manifest = manifest
        backend.start_runner(paths.root)
        manifest_io.save(paths.manifest, manifest)


def submit(request: SubmitRequest) -> Outcome:
    """Create the campaign and submit its whole graph; a second submit submits nothing twice."""
    from hpcrepro.campaign import plan
    from hpcrepro.config import resolve, run_count

    cfg = resolve(request.system, request.version, request.site, list(request.overrides))
    runs = run_count(cfg, request.runs)
    if request.runs_per_job < 1:
        raise UserError("--runs-per-job must be at least 1", where="--runs-per-job")
    name = layout.check_name(request.name or f"{request.system}-{request.version}")
    paths = CampaignPaths(cfg.site.log_dir / name)
    backend = make_backend(request.backend)
    slurm_note = None
    if request.backend == "slurm":
        try:
            backend.check_available()  # type: ignore[attr-defined]
        except SlurmUnavailable as error:
            if not request.dry_run:
                raise
            slurm_note = f"# {error.message}: scripts not checked with sbatch --test-only"
    needs_prep = plan.dataset_needs_prep(cfg)
    inputs = {
        "system": request.system,
        "version": request.version,
        "site": str(cfg.site_path) if cfg.site_path else None,
        "overrides": list(request.overrides),
    }
    before = _existing(paths.root)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the campaign folder {paths.root} "
                        f"({error.strerror or error})", where="site key 'log_dir'",
                        hint="set log_dir to a shared folder you can write to") from error
    try:
        with manifest_io.locked(paths.lock):
            if paths.manifest.exists():
                return _submit_again(request, paths, plan.fingerprint(
                    cfg, runs, request.runs_per_job, request.backend))
            try:
                with contextlib.ExitStack() as registration:
                    if not request.dry_run:
                        # refuses a name another folder's campaign holds, until our manifest exists
                        registration.enter_context(layout.registering(name, paths.root))
                    manifest = plan.build(
                        cfg, paths, name, runs, request.runs_per_job, request.backend, inputs,
                        prep=needs_prep,
                    )
                    if request.backend == "local":
                        backend = make_backend("local", manifest)
                    if slurm_note is None:
                        engine.check_scripts(paths, manifest, backend)
                    if request.dry_run:
                        lines = dry_run_lines(paths, manifest, dataset_note(cfg.site, needs_prep))
                        shown = [slurm_note, *lines] if slurm_note else lines
                        return Outcome(paths, manifest, shown)
                    manifest_io.save(paths.manifest, manifest)
            except BaseException:
                _remove_new_files(paths, before)
                raise
            submitted = engine.submit_planned(paths, manifest, backend)
            _after_submit(paths, manifest, backend)
    except BaseException:
        if paths.root not in before and not paths.manifest.exists():
            with contextlib.suppress(OSError):  # emptied by _remove_new_files, lock released
                paths.root.rmdir()
        raise
    return Outcome(
        paths,
        manifest,
        [f"campaign {name}: submitted {len(submitted)} job(s)", f"folder: {paths.root}"],
        submitted,
        list(backend.commands),
    )


def _submit_again(request: SubmitRequest, paths: CampaignPaths, wanted: str) -> Outcome:
    """A submit of a campaign that exists: submit only what an interrupted submit left over."""
    manifest = manifest_io.load(paths.manifest)
    name = manifest["name"]
    if manifest["fingerprint"] != wanted:
        raise UserError(
            f"campaign '{name}' already exists in {paths.root} with another configuration",
            hint="choose a new name with --name, or `hpcrepro resume " + name + "`",
        )
    if request.dry_run:
        return Outcome(paths, manifest, [f"# campaign {name} is already submitted"])
    if manifest.get("cancelled"):
        return Outcome(paths, manifest, [
            f"campaign {name} was cancelled: nothing submitted",
            f"to run what is left of it: hpcrepro resume {name}",
        ])
    backend = make_backend(manifest["backend"], manifest)
    engine.refresh(paths, manifest, backend)
    submitted = engine.submit_planned(paths, manifest, backend)
    _after_submit(paths, manifest, backend)
    note = (
        f"submitted {len(submitted)} stage(s) left over by an interrupted submit"
        if submitted
        else "already submitted: nothing to do"
    )
    return Outcome(paths, manifest, [f"campaign {name}: {note}"], submitted, list(backend.commands))


def _existing(root: Path) -> set[Path]:
    """Every path under `root` (itself included) that exists before a submit writes there."""
    if not root.exists():
        return set()
    return {root, *root.rglob("*")}


def _remove_new_files(paths: CampaignPaths, before: set[Path]) -> None:
    """Take back what a refused submit wrote into the campaign folder (scripts, subfolders,
    resolved-config.json), leaving whatever was there before; the folder itself goes too when it
    is new (see `submit`), once the lock file inside is gone."""
    created = sorted(_existing(paths.root) - before - {paths.lock}, reverse=True)
    for path in created:  # deepest first, so folders are empty when their turn comes
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                if path != paths.root:
                    path.rmdir()
            else:
                path.unlink()


def dry_run_lines(
    paths: CampaignPaths, manifest: dict[str, Any], dataset: str | None = None
) -> list[str]:
    """The graph and the exact sbatch commands (for the local backend: the commands its runner
    runs), runnable as a shell script."""
    lines = [
        f"# campaign {manifest['name']} in {paths.root} (dry run: nothing submitted)",
        "# graph: " + graph_text(manifest),
    ]
    if dataset:
        lines.append(dataset)
    if manifest["backend"] == "local":
        return lines + _local_run_lines(paths, manifest)
    for stage in manifest["stages"]:
        job = st.current(stage) or {"token": st.token(st.key(manifest), stage["name"], 1)}
        deps = [f"${_var(name)}" for name in stage["after"]]
        words = ["sbatch", "--parsable"]
        for arg in engine.sbatch_args(paths, manifest, stage, job, deps):
            # the dependency holds $job_... variables: double quotes keep them expandable
            words.append(f'"{arg}"' if arg.startswith("--dependency=") else shlex.quote(arg))
        words.append(shlex.quote(str(paths.root / stage["script"])))
        lines.append(f"{_var(stage['name'])}=$({' '.join(words)})")
    return lines


def _local_run_lines(paths: CampaignPaths, manifest: dict[str, Any]) -> list[str]:
    """What the local runner runs: each script with bash, one after another in graph order; a
    stage whose `afterok` dependency failed is skipped (blocked)."""
    from hpcrepro.scheduler.local import package_pythonpath

    lines = [
        "# local backend: a detached runner runs these one after another; a stage after a failed "
        "stage it needs (afterok) is not run",
        f"export HPCREPRO_LOCAL=1 PYTHONPATH={shlex.quote(package_pythonpath())}",
        f"cd {shlex.quote(str(paths.root))}",
    ]
    for stage in manifest["stages"]:
        lines.append(f"bash {shlex.quote(str(paths.root / stage['script']))}  # {stage['name']}")
    return lines


def dataset_note(site: Site, needs_prep: bool) -> str:
    """One comment line: where the data set comes from (no prep stage when it is ready).
    Paths are written with repr(), so that no character in them can end the comment."""
    dataset = str(site.dataset_dir)
    if needs_prep:
        return f"# dataset: the prep stage makes {dataset!r} from {str(site.imagenet_dir)!r}"
    return f"# dataset: {dataset!r} is prepared: no prep stage"


def _var(stage_name: str) -> str:
    return "job_" + stage_name.replace("-", "_")


def graph_text(manifest: dict[str, Any]) -> str:
    parts = []
    for stage in manifest["stages"]:
        after = f" ({stage['dependency']} {', '.join(stage['after'])})" if stage["after"] else ""
        parts.append(stage["name"] + after)
    return "; ".join(parts)


# --- status


def load_campaigns(
    campaign: str | None, on_damaged: Callable[[str, UserError], None] | None = None
) -> list[tuple[CampaignPaths, dict[str, Any]]]:
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


def refresh_all(
    campaigns: list[tuple[CampaignPaths, dict[str, Any]]], slurm: Slurm | None = None
) -> Slurm:
    """One status pass: one sacct call for the active jobs of every Slurm campaign together
    (plus one squeue for jobs too new for accounting), then save what changed."""
    slurm = slurm or Slurm()
    ids = [
        job_id
        for paths, m in campaigns
        if m["backend"] == "slurm"
        for job_id in engine.active_job_ids(m)
    ]
    infos = {}
    if ids:
        try:
            infos = slurm.query(ids)
            slurm.unavailable = None
        except SlurmUnavailable as error:
            infos = {}
            slurm.unavailable = error.message
    for paths, manifest in campaigns:
        backend: engine.Backend
        if manifest["backend"] == "local":
            backend = make_backend("local", manifest)
            local_infos = backend.query(engine.active_job_ids(manifest))
            changed = engine.apply_infos(paths, manifest, local_infos)
        else:
            backend = slurm
            changed = engine.apply_infos(paths, manifest, infos)
        needs_repair = any(
            job["state"] == states.SUBMITTING for s in manifest["stages"] for job in s["jobs"]
        )
        if changed or needs_repair:
            _save_if_free(
                paths,
                manifest,
                infos if manifest["backend"] == "slurm" else {},
                backend,
                needs_repair,
            )
    return slurm


def _save_if_free(
    paths: CampaignPaths,
    manifest: dict[str, Any],
    infos: dict[str, Any],
    backend: engine.Backend,
    repair: bool,
) -> None:
    """Write status updates unless another process holds the lock (it will write its own)."""
    with manifest_io.try_locked(paths.lock) as got:
        if not got:
            return
        fresh = manifest_io.load(paths.manifest)
        if repair:
            # when Slurm does not answer, the next command that reaches it repairs instead
            with contextlib.suppress(SlurmUnavailable):
                engine.repair(fresh, backend, paths)
        if fresh["backend"] == "local":
            from hpcrepro.scheduler.local import Local

            infos = Local(fresh).query(engine.active_job_ids(fresh))
        engine.apply_infos(paths, fresh, infos)
        manifest_io.save(paths.manifest, fresh)
        manifest.clear()
        manifest.update(fresh)


# --- cancel and resume


def cancel(campaign: str) -> Outcome:
    paths = layout.find(campaign)
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        backend = make_backend(manifest["backend"], manifest)
        engine.refresh(paths, manifest, backend)
        ids = engine.active_job_ids(manifest)
        if not ids and not any(st.state_of(s) == states.PLANNED for s in manifest["stages"]):
            manifest_io.save(paths.manifest, manifest)
            return Outcome(paths, manifest, [
                f"campaign {manifest['name']}: nothing to cancel (every job has ended)"
            ])
        backend.cancel(ids)
        manifest["cancelled"] = True
        for stage in manifest["stages"]:
            job = st.current(stage)
            if job and job["state"] == states.PLANNED:
                job["state"] = states.CANCELLED
            if manifest["backend"] == "local" and job and states.is_active(job["state"]):
                job.update(state=states.CANCELLED, slurm_state="CANCELLED", end=st.now())
        if manifest["backend"] == "slurm" and ids:
            engine.apply_infos(paths, manifest, backend.query(ids))
        engine.judge_runs(paths, manifest)
        manifest_io.save(paths.manifest, manifest)
    return Outcome(
        paths,
        manifest,
        [f"campaign {manifest['name']}: cancelled {len(ids)} job(s)"],
        commands=list(backend.commands),
    )


def resume(campaign: str) -> Outcome:
    """Submit replacements for what failed or never ran, until enough valid runs can exist."""
    paths = layout.find(campaign)
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        backend = make_backend(manifest["backend"], manifest)
        if manifest["backend"] == "slurm":
            backend.check_available()  # type: ignore[attr-defined]
        engine.refresh(paths, manifest, backend)
        manifest["cancelled"] = False
        for stage in manifest["stages"]:  # cancelled before submission: plan them again
            job = st.current(stage)
            if job and job["state"] == states.CANCELLED and not job.get("job_id"):
                job["state"] = states.PLANNED
        planned = engine.plan_resume(manifest)
        new_stages = [
            s
            for s in manifest["stages"]
            if s["name"] in planned and not (paths.root / s["script"]).exists()
        ]
        if new_stages:
            from hpcrepro.campaign import plan

            cfg = plan.stored_config(paths, manifest)
            for stage in new_stages:
                plan.write_script(cfg, paths, manifest, stage, manifest["backend"])
        backend.cancel(engine.jobs_to_cancel_on_resume(manifest))
        submitted = engine.submit_planned(paths, manifest, backend)
        _after_submit(paths, manifest, backend)
    counts = engine.run_counts(manifest)
    note = f"submitted {', '.join(submitted)}" if submitted else "nothing to resubmit"
    return Outcome(
        paths,
        manifest,
        [
            f"campaign {manifest['name']}: {note}",
            f"runs: {counts['valid']} valid, {counts['coming']} to come, {counts['lost']} lost, "
            f"{manifest['runs_required']} required",
        ],
        submitted,
        list(backend.commands),
    )

