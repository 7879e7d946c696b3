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
    system: str = typer.Option(..., "--system", "-s", help="system name from `hpcrepro systems`"),
    version: str = typer.Option(..., "--version", "-r", help=f"MLPerf round: {listing()}"),
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
    as_json: bool = typer.Option(False, "--json", help="print one JSON document (see docs)"),
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
    if as_json:
        from hpcrepro.campaign.view import outcome_json

        typer.echo(outcome_json("submit", outcome, dry_run))
        return
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
    _watch(campaign, campaigns, checked, said, as_json, bool(half_made))


LOG_POLL_S = 2.0  # how often `status --watch` rereads the run logs between scheduler polls


def _watch(
    campaign: str | None,
    campaigns: list[tuple[Any, Any]],
    checked: Any,
    said: set[Path],
    as_json: bool,
    half_made: bool,
) -> None:
    """Poll until every job has ended. On a terminal a live view (stages, then each run's epoch,
    accuracy, elapsed and ETA); piped, only what changed, one line each; with --json one JSON
    document per line (JSON lines). The back-off restarts only when a job's state changes
    (elapsed times and progress change on every poll while a job runs)."""
    from hpcrepro.campaign import actions, view
    from hpcrepro.scheduler.base import Backoff

    backoff = Backoff(first=2.0, maximum=30.0)
    previous: list[tuple[str, ...]] = []
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}
    live: Any = None
    if not as_json and sys.stdout.isatty():
        from rich.console import Console
        from rich.live import Live

        live = Live(console=Console(highlight=False), auto_refresh=False)
        live.start()

    def show() -> None:
        if live is not None:
            from rich.console import Group
            from rich.text import Text

            stamp = Text(f"(updated {time.strftime('%H:%M:%S')})", style="dim")
            live.update(Group(view.live_table(campaigns), stamp), refresh=True)
        else:
            for line in view.change_lines(campaigns, seen):
                typer.echo(line)
            sys.stdout.flush()

    try:
        while True:
            if as_json:
                typer.echo(view.as_json(campaigns, checked.unknown, one_line=True))
            else:
                show()
            if not any(m.active_job_ids() for _, m in campaigns):
                raise typer.Exit(_exit_code(campaigns, checked, half_made))
            current = _job_states(campaigns)
            wait = backoff.next(changed=current != previous)
            # The scheduler is asked once per back-off step; the run logs, read here on this
            # machine, are read again every LOG_POLL_S meanwhile, so epochs show as they come.
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(LOG_POLL_S, left))
                if not as_json and left > LOG_POLL_S:
                    show()
            previous = current
            campaigns = actions.load_campaigns(campaign)
            checked = _status_pass(campaigns, actions.refresh_all(campaigns, checked), said)
    finally:
        if live is not None:
            live.stop()


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


JsonOption = typer.Option(False, "--json", help="print one JSON document (see docs)")


def cancel(
    campaign: str = typer.Argument(..., help="campaign name or folder"),
    as_json: bool = JsonOption,
) -> None:
    """Cancel every job of the campaign that has not ended (local jobs: SIGTERM, then SIGKILL
    after $HPCREPRO_CANCEL_GRACE_S, default 10 s). Exit code 1 when a process survived."""
    from hpcrepro.campaign import actions, view

    outcome = actions.cancel(campaign)
    typer.echo(view.outcome_json("cancel", outcome) if as_json else "\n".join(outcome.lines))
    raise typer.Exit(outcome.exit_code)


def resume(
    campaign: str = typer.Argument(..., help="campaign name or folder"),
    as_json: bool = JsonOption,
) -> None:
    """Replace what failed or never ran, until the required number of valid runs can exist; a
    campaign whose submit was interrupted is finished."""
    from hpcrepro.campaign import actions, view

    outcome = actions.resume(campaign)
    typer.echo(view.outcome_json("resume", outcome) if as_json else "\n".join(outcome.lines))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
    app.command("resume")(resume)
