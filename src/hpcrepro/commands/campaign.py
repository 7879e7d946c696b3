"""`hpcrepro submit`, `status`, `cancel`, `resume`: a campaign of chained jobs.

Only typer and the standard library load here; the campaign code (and pydantic, through the
configuration) loads inside the commands, so `hpcrepro status` starts fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from hpcrepro.errors import UserError
from hpcrepro.rounds import listing

# typer reads these annotations at runtime, so they keep the Optional[...] spelling.


def submit(
    system: str = typer.Option(..., "--system", help="system name from `hpcrepro systems`"),
    version: str = typer.Option(..., "--version", help=f"MLPerf round: {listing()}"),
    site: Path | None = typer.Option(None, "--site", help="site YAML (else $HPCREPRO_SITE)"),
    overrides: list[str] = typer.Option([], "--set", help="KEY=VALUE, overrides any setting"),
    runs: int | None = typer.Option(None, "--runs", help="training runs (site default: 5)"),
    runs_per_job: int = typer.Option(
        1, "--runs-per-job", help="runs in one job (1: each run can be replaced alone)"
    ),
    name: str | None = typer.Option(None, "--name", help="campaign name (default SYSTEM-VERSION)"),
    backend: str = typer.Option("slurm", "--backend", help="slurm, or local for this machine"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the graph and sbatch commands, submit nothing"
    ),
    no_site_check: bool = typer.Option(
        False, "--no-site-check", help="skip checking the site against the cluster first"
    ),
) -> None:
    """Submit the whole stage graph (image, runs, collect) so you can log out.

    On Slurm it first checks the site against the cluster (`hpcrepro site check`): errors stop
    it with exit code 2 before anything is written. Not for --dry-run or the local backend.
    """
    from hpcrepro.campaign import actions
    from hpcrepro.config import resolve
    from hpcrepro.image.tagcheck import image_warning

    cfg = resolve(system, version, site, list(overrides))
    if backend == "slurm" and not dry_run and not no_site_check:
        _check_site_first(cfg)
    warning = image_warning(cfg.site.image, cfg.spec.container_base, system, version)
    if warning and cfg.site.runtime != "none":
        typer.echo(f"warning: {warning}", err=True)
    request = actions.SubmitRequest(
        system=system,
        version=version,
        site=site,
        overrides=list(overrides),
        name=name,
        runs=runs,
        runs_per_job=runs_per_job,
        backend=backend,
        dry_run=dry_run,
    )
    outcome = actions.submit(request)
    typer.echo("\n".join(outcome.lines))
    if not dry_run and outcome.manifest is not None and not outcome.manifest.cancelled:
        typer.echo(f"follow it with: hpcrepro status {outcome.manifest.name} --watch")


def _check_site_first(cfg: Any) -> None:
    """`site check` for the system to submit: warnings are shown, errors stop the submit. A
    controller that does not answer is said first, in the backend's own words."""
    from hpcrepro.scheduler import registry
    from hpcrepro.site_check import Needs, probe_and_check

    registry.make("slurm").check_available()

    needs = Needs(f"{cfg.system} {cfg.version}", cfg.spec.nodes, cfg.spec.gpus_per_node)
    findings = probe_and_check(cfg.site, needs)
    for finding in findings:
        typer.echo(finding.text(), err=True)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise UserError(
            f"the site check found {len(errors)} error(s) (above); nothing was submitted",
            where=str(cfg.site_path) if cfg.site_path else "site settings",
            hint="fix them (hpcrepro site check shows them again), or pass --no-site-check",
        )


# `hpcrepro status` exit codes besides 0 (every campaign can still reach its runs, every state
# known) and 2 (a user error: an unknown name, a damaged manifest).
EXIT_LOST = 1  # a campaign lost runs that no replacement stands in for, or is half-made
EXIT_UNKNOWN = 3  # Slurm did not answer: some states shown are only the last known


def status(
    campaign: str | None = typer.Argument(None, help="campaign name or folder (default: all)"),
    watch: bool = typer.Option(False, "--watch", help="refresh until every job has ended"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Stages of every campaign: state, elapsed, nodes, pending reason, run verdicts.

    Exit code 0: all well; 1: a campaign lost runs that `resume` must replace, or its submit was
    interrupted; 3: Slurm did not answer, so some states are only the last known; 2: an error.
    """
    from hpcrepro.campaign import actions, layout, view
    from hpcrepro.scheduler.base import Backoff

    damaged: list[str] = []
    half_made: list[str] = []

    def warn(name: str, error: UserError) -> None:
        if isinstance(error, layout.HalfMade):
            if not error.busy:
                half_made.append(name)
            typer.echo(f"warning: {error.render().replace(chr(10), '; ')}", err=True)
            return
        damaged.append(name)
        one_line = error.render().replace("\n", "; ")
        typer.echo(f"warning: campaign {name} is left out: {one_line}", err=True)

    try:
        campaigns = actions.load_campaigns(campaign, on_damaged=warn)
    except layout.HalfMade as half:
        typer.echo(half.render())
        raise typer.Exit(0 if half.busy else EXIT_LOST) from None
    if (damaged or half_made) and not campaigns and not as_json:
        raise typer.Exit(EXIT_LOST if half_made else 0)  # the warnings said it all
    said: set[Path] = set()
    checked = _status_pass(campaigns, actions.refresh_all(campaigns), said)
    if not watch:
        typer.echo(
            view.as_json(campaigns, checked.unknown)
            if as_json
            else view.as_text(campaigns, unknown=checked.unknown)
        )
        raise typer.Exit(_exit_code(campaigns, checked, bool(half_made)))
    # One JSON document per line (JSON lines) while watching; the back-off restarts only when a
    # job's state changes (elapsed times and progress change on every poll while a job runs).
    backoff = Backoff(first=2.0, maximum=30.0)
    previous: list[tuple[str, ...]] = []
    while True:
        if as_json:
            text = view.as_json(campaigns, checked.unknown, one_line=True)
        else:
            text = view.as_text(campaigns, live=True, unknown=checked.unknown)
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[J")
            text += f"\n(updated {time.strftime('%H:%M:%S')})"
        typer.echo(text)
        if not any(m.active_job_ids() for _, m in campaigns):
            raise typer.Exit(_exit_code(campaigns, checked, bool(half_made)))
        current = _job_states(campaigns)
        time.sleep(backoff.next(changed=current != previous))
        previous = current
        campaigns = actions.load_campaigns(campaign)
        checked = _status_pass(campaigns, actions.refresh_all(campaigns, checked), said)


def _status_pass(campaigns: list[tuple[Any, Any]], checked: Any, said: set[Path]) -> Any:
    """Say on stderr what a status pass could not do (each unsaved campaign once)."""
    from hpcrepro.scheduler import registry

    names = {paths.root: manifest.name for paths, manifest in campaigns}
    for root, jobs in checked.unknown.items():
        manifest = next(m for p, m in campaigns if p.root == root)
        known = manifest.states_checked or "their submission"
        typer.echo(
            f"note: campaign {names[root]}: {registry.title(manifest.backend)} did not answer "
            f"({checked.problems[root]}); {len(jobs)} job(s) show their state as last "
            f"known, at {known}",
            err=True,
        )
    for root, problem in checked.not_saved.items():
        if root not in said:
            said.add(root)
            typer.echo(
                f"warning: campaign {names[root]}: this status could not be recorded "
                f"({problem}); it is shown, not saved",
                err=True,
            )
    return checked


def _exit_code(campaigns: list[tuple[Any, Any]], checked: Any, half_made: bool) -> int:
    from hpcrepro.campaign import actions

    if checked.unknown:
        return EXIT_UNKNOWN
    if half_made or any(actions.short_of_runs(manifest) for _, manifest in campaigns):
        return EXIT_LOST
    return 0


def _job_states(campaigns: list[tuple[Any, Any]]) -> list[tuple[str, ...]]:
    """What decides whether a watch poll saw a change: every job's state, nothing else."""
    return [
        (manifest.name, stage.name, job.job_id or "", job.state)
        for _, manifest in campaigns
        for stage, job in manifest.jobs()
    ]


def cancel(campaign: str = typer.Argument(..., help="campaign name or folder")) -> None:
    """Cancel every job of the campaign that has not ended (local jobs: SIGTERM, then SIGKILL
    after $HPCREPRO_CANCEL_GRACE_S, default 10 s). Exit code 1 when a process survived."""
    from hpcrepro.campaign import actions

    outcome = actions.cancel(campaign)
    typer.echo("\n".join(outcome.lines))
    raise typer.Exit(outcome.exit_code)


def resume(campaign: str = typer.Argument(..., help="campaign name or folder")) -> None:
    """Replace what failed or never ran, until the required number of valid runs can exist; a
    campaign whose submit was interrupted is finished."""
    from hpcrepro.campaign import actions

    typer.echo("\n".join(actions.resume(campaign).lines))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
    app.command("resume")(resume)
