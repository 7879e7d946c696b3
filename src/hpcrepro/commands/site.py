"""`hpcrepro site init` and `hpcrepro site check`: a site file from what the cluster says, and
the site file checked against the cluster (docs/site.md#site-init-and-site-check)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from hpcrepro.errors import UserError, did_you_mean
from hpcrepro.rounds import listing

site_app = typer.Typer(help="Write and check the site file.", no_args_is_help=True)

EXIT_PROBLEMS = 1  # `site check` found errors (2 stays a user error: a bad file or option)


def load_site(path: Path | None) -> Any:
    """The site file alone (no system), validated as `resolve` validates it."""
    from pydantic import ValidationError

    from hpcrepro.config import load_site_file, site_file_and_source
    from hpcrepro.errors import location
    from hpcrepro.site import Site
    from hpcrepro.validation import user_error
    from hpcrepro.yamlio import dotted_key

    site_file, source = site_file_and_source(path)
    if site_file is None:
        raise UserError(
            "no site file to check",
            where="--site",
            hint="pass --site FILE, set $HPCREPRO_SITE, or write one with: hpcrepro site init",
        )
    data, doc = load_site_file(site_file, source)
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        where = (
            doc.where
            if doc is not None
            else (lambda loc: location(str(site_file), dotted_key(loc)))
        )
        raise user_error(exc, Site, where, docs="docs/site.md") from None


@site_app.command("init")
def site_init(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write (default: ~/.config/hpcrepro/site.yaml)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
    partition: str | None = typer.Option(
        None, "--partition", help="Partition to use (default: the cluster's default)."
    ),
    dataset_dir: Path | None = typer.Option(
        None, "--dataset-dir", help="The prepared ImageNet folder (else a placeholder)."
    ),
    log_dir: Path | None = typer.Option(
        None, "--log-dir", help="A folder to test first for log_dir (its 'hpcrepro' subfolder)."
    ),
) -> None:
    """Write a site file from what the cluster says; every value notes where it came from.

    Asks sinfo, srun --help, srun --mpi=list and sacctmgr, and runs one short srun step on a
    compute node (container tools, shared folders). Exit code 2 without Slurm, for an unknown
    partition, or when the file exists and --force is not given.
    """
    import time

    from hpcrepro import site_probe
    from hpcrepro.safeopen import write_atomically
    from hpcrepro.site import DEFAULT_SITE_PATH, Site
    from hpcrepro.site_init import site_text

    default_drop = Site.model_fields["drop_caches_command"].default

    target = (output or DEFAULT_SITE_PATH).expanduser()
    if (target.exists() or target.is_symlink()) and not force:
        raise UserError(
            f"{target} exists",
            where="--output",
            hint="pass --force to replace it (its contents are lost), or choose another --output",
        )
    if target.is_dir():
        raise UserError(f"{target} is a folder", where="--output", hint="give a file name")
    site_probe.require_slurm()
    candidates = site_probe.candidate_folders(log_dir)
    probe = site_probe.probe(
        partition=partition,
        folders=candidates,
        paths=[dataset_dir.expanduser().absolute()] if dataset_dir else [],
        drop_caches=default_drop,
    )
    if partition is not None and probe.partition(partition) is None:
        names = [p.name for p in probe.partitions]
        raise UserError(
            f"partition '{partition}' is not one sinfo lists",
            where="--partition",
            hint=did_you_mean(partition, names, f"partitions: {', '.join(names) or 'none'}"),
        )
    text = site_text(
        probe,
        partition=partition,
        candidates=candidates,
        dataset_dir=dataset_dir.expanduser().absolute() if dataset_dir else None,
        drop_caches=default_drop,
        stamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create {target.parent}: {exc.strerror}", where="--output"
        ) from None
    write_atomically(target, text.encode(), "--output", 0o644)
    load_site(target)  # what was written loads as a site file
    typer.echo(text, nl=False)
    sys.stdout.flush()
    typer.echo(f"wrote {target}; check it with: hpcrepro site check --site {target}", err=True)


@site_app.command("check")
def site_check(
    site: Path | None = typer.Option(
        None, "--site", help="Site YAML (default: $HPCREPRO_SITE, ~/.config/hpcrepro/site.yaml)."
    ),
    system: str | None = typer.Option(None, "--system", "-s", help="Also check for this system."),
    version: str | None = typer.Option(None, "--version", "-r", help=f"Its round: {listing()}."),
    overrides: list[str] = typer.Option([], "--set", help="KEY=VALUE, as for submit."),
    as_json: bool = typer.Option(False, "--json", help="Findings as one JSON document."),
) -> None:
    """Check the site file against the cluster; each problem comes with its fix.

    Exit code 0: no errors (warnings may be shown); 1: errors found; 2: a bad site file or
    option, or no Slurm.
    """
    from hpcrepro.site_check import Needs, probe_and_check

    if (system is None) != (version is None):
        raise UserError(
            "--system and --version go together",
            where="--system" if system is None else "--version",
            hint="give both to check the site for one system, or neither",
        )
    needs = None
    if system is not None and version is not None:
        from hpcrepro.config import resolve

        cfg = resolve(system, version, site, overrides)
        loaded = cfg.site
        needs = Needs(f"{system} {version}", cfg.spec.nodes, cfg.spec.gpus_per_node)
    else:
        if overrides:
            raise UserError("--set needs --system and --version", where="--set")
        loaded = load_site(site)
    findings = probe_and_check(loaded, needs)
    errors = sum(f.level == "error" for f in findings)
    if as_json:
        typer.echo(
            json.dumps({"errors": errors, "findings": [f.to_json() for f in findings]}, indent=2)
        )
    else:
        for finding in findings:
            typer.echo(finding.text())
        warnings = len(findings) - errors
        typer.echo(
            f"site check: {errors} error(s), {warnings} warning(s)"
            if findings
            else "site check: no problems found"
        )
    raise typer.Exit(EXIT_PROBLEMS if errors else 0)


def register(app: typer.Typer) -> None:
    """Add `site init` and `site check`."""
    app.add_typer(site_app, name="site")
