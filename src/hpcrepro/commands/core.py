"""`hpcrepro config show` and `hpcrepro render`: look at and write out a resolved configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hpcrepro.rounds import listing

config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)

SystemOption = typer.Option(..., "--system", "-s", help="System name, e.g. dgxa100_8x8.")
VersionOption = typer.Option(..., "--version", "-r", help=f"MLPerf round: {listing()}.")
SiteOption = typer.Option(
    None, "--site", help="Site YAML (default: $HPCREPRO_SITE, ~/.config/hpcrepro/site.yaml)."
)
SetOption = typer.Option(
    [], "--set", help="Override any key: --set partition=gpu --set hparams.LR=10.5 (repeatable)."
)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted key/value pairs of nested dicts; lists and scalars are leaves."""
    if isinstance(data, dict) and data:
        items: list[tuple[str, Any]] = []
        for key, value in data.items():
            items.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return items
    return [(prefix, data)]


@config_app.command("show")
def config_show(
    system: str = SystemOption,
    version: str = VersionOption,
    site: Path | None = SiteOption,
    overrides: list[str] = SetOption,
    explain: bool = typer.Option(False, "--explain", help="Show where every value came from."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print the fully resolved configuration of one system and version on your site."""
    from hpcrepro.config import resolve

    cfg = resolve(system, version, site, overrides)
    data = cfg.to_dict()
    if as_json:
        if explain:
            data = {key: {"value": v, "origin": cfg.origin_of(key)} for key, v in flatten(data)}
        typer.echo(json.dumps(data, indent=2))
        return
    if not explain:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
        return
    rows = [
        (key, json.dumps(value) if not isinstance(value, str) else value, cfg.origin_of(key))
        for key, value in flatten(data)
    ]
    import sys

    if not sys.stdout.isatty():
        # Piped (grep, a file): one line per key, never wrapped, so `| grep KEY` finds the key,
        # its whole value and its whole origin on one line.
        width = max(len(key) for key, _, _ in rows)
        for key, shown, origin in rows:
            typer.echo(f"{key.ljust(width)}  {shown}  # {origin}")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not str, everywhere: rich would read '[...]' in a value (a Slurm constraint such as
    # '[rack1|rack2]'), a key or a file name as markup, and drop it or fail on it. Keys never
    # wrap; long values and origins fold onto more lines within their column.
    table = Table(title=Text(f"{system} {version}"), show_lines=False)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from", overflow="fold")
    for key, shown, origin in rows:
        table.add_row(Text(key), Text(shown), Text(origin))
    Console(highlight=False).print(table)


def _check_target(path: Path, text: str, force: bool) -> None:
    """Refuse to write over anything the user made unless it is a file and --force says so."""
    from hpcrepro.errors import UserError
    from hpcrepro.safeopen import existing_file

    if not existing_file(path, "--dir", hint="move it away, or choose another -d folder"):
        return
    if force:
        return
    try:
        same = path.read_bytes() == text.encode()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", where="--dir") from None
    if not same:
        raise UserError(
            f"{path} exists and differs from what would be written",
            where="--dir",
            hint="choose another -d folder, or pass --force to replace it (your edits are lost)",
        )


def render(
    system: str = SystemOption,
    version: str = VersionOption,
    site: Path | None = SiteOption,
    overrides: list[str] = SetOption,
    output: Path = typer.Option(..., "--dir", "-d", help="Folder for the scripts."),
    runs: int | None = typer.Option(None, "--runs", help="Runs in the job, 1-99 (site default 5)."),
    force: bool = typer.Option(False, "--force", help="Replace files that differ."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON document: the files written and the warnings."
    ),
) -> None:
    """Write the sbatch script and the resolved configuration into a folder for review."""
    import yaml

    from hpcrepro import review
    from hpcrepro.config import resolve
    from hpcrepro.config import run_count as checked_run_count
    from hpcrepro.errors import UserError
    from hpcrepro.render import render_training

    missing = review.placeholders(site, list(overrides))
    if missing:
        typer.echo(
            f"warning: no site file: {', '.join(missing)} are placeholder paths "
            "(/PLACEHOLDER/...), so the scripts are for review and cannot be submitted; write a "
            "site file with: hpcrepro site init",
            err=True,
        )
    cfg = resolve(system, version, site, review.placeholder_overrides(missing) + list(overrides))
    from hpcrepro.image.tagcheck import image_notes

    filled, notes = image_notes(cfg)
    warnings = [f"warning: {n}" if not n.startswith("no image") else n for n in notes]
    for line in warnings:
        typer.echo(line, err=True)
    run_count = checked_run_count(cfg, runs)
    script = render_training(
        filled, job_name=f"hpcrepro-{system}-{version}", run_indices=list(range(1, run_count + 1))
    )
    if output.exists() and not output.is_dir():
        raise UserError(
            f"{output} exists and is not a folder",
            where="--dir",
            hint="-d takes a folder: train.sbatch and resolved-config.yaml are written into it",
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {output}: {exc.strerror}", where="--dir") from None
    files = [
        (output / "train.sbatch", script, 0o755),
        (output / "resolved-config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False), 0o644),
    ]
    if missing:
        files = [(path, review.with_banner(text, missing), mode) for path, text, mode in files]
    for path, text, _ in files:  # every check before any write: all or nothing
        _check_target(path, text, force)
    from hpcrepro.safeopen import write_atomically

    for path, text, mode in files:
        write_atomically(path, text.encode(), "--dir", mode)
    script_path, config_path = files[0][0], files[1][0]
    if not missing and not cfg.site.dataset_dir.is_dir():
        warnings.append(f"warning: dataset_dir {cfg.site.dataset_dir} does not exist here")
        typer.echo(warnings[-1], err=True)
    if as_json:
        document = {
            "system": system,
            "version": version,
            "script": str(script_path),
            "config": str(config_path),
            "runs": run_count,
            "warnings": warnings,
        }
        typer.echo(json.dumps(document, indent=1))
        return
    typer.echo(str(script_path))
    typer.echo(str(config_path))


def register(app: typer.Typer) -> None:
    """Add `config show` and `render`."""
    app.add_typer(config_app, name="config")
    app.command("render")(render)
