"""`hpcrepro config show` and `hpcrepro render`: look at and write out a resolved configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)

SystemOption = typer.Option(..., "--system", "-s", help="System name, e.g. dgxa100_8x8.")
VersionOption = typer.Option(..., "--version", "-v", help="MLPerf round: r2.1, r3.0, r3.1, r4.0.")
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
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{system} {version}", show_lines=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    table.add_column("from", overflow="fold")
    for key, value in flatten(data):
        shown = json.dumps(value) if not isinstance(value, str) else value
        table.add_row(key, shown, cfg.origin_of(key))
    Console().print(table)


def _write_new(path: Path, text: str, force: bool) -> None:
    """Write `text` to `path`, refusing to replace a different file unless forced."""
    from hpcrepro.errors import UserError

    if path.exists() and not force and path.read_text(errors="replace") != text:
        raise UserError(
            f"{path} exists and differs from what would be written",
            hint="choose another -o folder, or pass --force to replace it (your edits are lost)",
        )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def render(
    system: str = SystemOption,
    version: str = VersionOption,
    site: Path | None = SiteOption,
    overrides: list[str] = SetOption,
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the scripts."),
    runs: int | None = typer.Option(None, "--runs", help="Runs in the job, 1-99 (site default 5)."),
    force: bool = typer.Option(False, "--force", help="Replace files that differ."),
) -> None:
    """Write the sbatch script and the resolved configuration into a folder for review."""
    import yaml

    from hpcrepro.config import resolve
    from hpcrepro.config import run_count as checked_run_count
    from hpcrepro.errors import UserError
    from hpcrepro.render import render_training

    cfg = resolve(system, version, site, overrides)
    run_count = checked_run_count(cfg, runs)
    script = render_training(
        cfg, job_name=f"hpcrepro-{system}-{version}", run_indices=list(range(1, run_count + 1))
    )
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {output}: {exc.strerror}", where="--output") from None
    script_path = output / "train.sbatch"
    config_path = output / "resolved-config.yaml"
    _write_new(script_path, script, force)
    script_path.chmod(0o755)
    _write_new(config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False), force)
    typer.echo(str(script_path))
    typer.echo(str(config_path))
    if not cfg.site.dataset_dir.is_dir():
        typer.echo(f"warning: dataset_dir {cfg.site.dataset_dir} does not exist here", err=True)


def register(app: typer.Typer) -> None:
    """Add `config show` and `render`."""
    app.add_typer(config_app, name="config")
    app.command("render")(render)
