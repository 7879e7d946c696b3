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

# typer reads these annotations at runtime, so they keep the Optional[...] spelling.


def submit(
    system: str = typer.Option(..., "--system", help="system name from `hpcrepro systems`"),
    version: str = typer.Option(..., "--version", help="MLPerf round: r2.1, r3.0, r3.1, r4.0"),
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
) -> None:
    """Submit the whole stage graph (image, runs, collect) so you can log out."""
    from hpcrepro.campaign import actions
    from hpcrepro.config import resolve
    from hpcrepro.image.tagcheck import image_warning

    cfg = resolve(system, version, site, list(overrides))
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
    if not dry_run and not outcome.manifest.get("cancelled"):
        typer.echo(f"follow it with: hpcrepro status {outcome.manifest['name']} --watch")


def status(
    campaign: str | None = typer.Argument(None, help="campaign name or folder (default: all)"),
    watch: bool = typer.Option(False, "--watch", help="refresh until every job has ended"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Stages of every campaign: state, elapsed, nodes, pending reason, run verdicts."""
    from hpcrepro.campaign import actions, engine, view
    from hpcrepro.scheduler.slurm import Backoff

    damaged: list[str] = []

    def warn(name: str, error: UserError) -> None:
        damaged.append(name)
        one_line = error.render().replace("\n", "; ")
        typer.echo(f"warning: campaign {name} is left out: {one_line}", err=True)

    campaigns = actions.load_campaigns(campaign, on_damaged=warn)
    if damaged and not campaigns and not as_json:
        return  # the warnings said it all; "no campaigns yet" would be wrong
    slurm = actions.refresh_all(campaigns)
    if slurm.unavailable:
        typer.echo(f"note: {slurm.unavailable}; Slurm jobs show their last known state", err=True)
    if not watch:
        typer.echo(view.as_json(campaigns) if as_json else view.as_text(campaigns))
        return
    # One JSON document per line (JSON lines) while watching; the back-off restarts only when a
    # job's state changes (elapsed times and progress change on every poll while a job runs).
    backoff = Backoff(first=2.0, maximum=30.0)
    previous: list[tuple[str, ...]] = []
    while True:
        if as_json:
            text = view.as_json(campaigns, one_line=True)
        else:
            text = view.as_text(campaigns, live=True)
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[J")
            text += f"\n(updated {time.strftime('%H:%M:%S')})"
        typer.echo(text)
        if not any(engine.active_job_ids(m) for _, m in campaigns):
            return
        current = _job_states(campaigns)
        time.sleep(backoff.next(changed=current != previous))
        previous = current
        campaigns = actions.load_campaigns(campaign)
        actions.refresh_all(campaigns, slurm)


def _job_states(campaigns: list[tuple[Any, dict[str, Any]]]) -> list[tuple[str, ...]]:
    """What decides whether a watch poll saw a change: every job's state, nothing else."""
    return [
        (manifest["name"], stage["name"], job.get("job_id") or "", job["state"])
        for _, manifest in campaigns
        for stage in manifest["stages"]
        for job in stage["jobs"]
    ]


def cancel(campaign: str = typer.Argument(..., help="campaign name or folder")) -> None:
    """Cancel every job of the campaign that has not ended."""
    from hpcrepro.campaign import actions

    typer.echo("\n".join(actions.cancel(campaign).lines))


def resume(campaign: str = typer.Argument(..., help="campaign name or folder")) -> None:
    """Replace what failed or never ran, until the required number of valid runs can exist."""
    from hpcrepro.campaign import actions

    typer.echo("\n".join(actions.resume(campaign).lines))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
    app.command("resume")(resume)
