"""`hpcrepro systems`: browse the catalog of NVIDIA ResNet-50 systems.

Only typer is imported here; the catalog (pydantic) and rich load inside the commands so that
`hpcrepro --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer

from hpcrepro.rounds import listing

if TYPE_CHECKING:
    from hpcrepro.catalog import Catalog, SystemVersion

systems_app = typer.Typer(
    help="List NVIDIA's ResNet-50 systems and versions in the catalog, or show one in full.",
    invoke_without_command=True,
    no_args_is_help=False,
)

VERSION_HELP = f"Only this MLPerf version ({listing()})."


def _check_version(version: str | None) -> None:
    from hpcrepro.errors import UserError
    from hpcrepro.rounds import VERSIONS
    from hpcrepro.validation import suggest

    if version is not None and version not in VERSIONS:
        raise UserError(
            f"unknown version '{version}'{suggest(version, VERSIONS)}",
            where="--version",
            hint=f"versions: {', '.join(VERSIONS)}",
        )


def _summary(system: str, version: str, item: SystemVersion) -> dict[str, Any]:
    return {
        "system": system,
        "version": version,
        "nodes": item.nodes,
        "gpus_per_node": item.gpus_per_node,
        "batch_per_gpu": item.batch_per_gpu,
        "global_batch": item.global_batch,
        "ruleset": item.ruleset,
        "provenance": item.provenance,
        "published_score_minutes": item.published.score_minutes if item.published else None,
    }


def _rows(catalog: Catalog, version: str | None) -> list[dict[str, Any]]:
    rows = []
    for name in catalog.names():
        for ver, item in catalog.systems[name].versions.items():
            if version is None or ver == version:
                rows.append(_summary(name, ver, item))
    return rows


@systems_app.callback()
def list_systems(
    ctx: typer.Context,
    version: str | None = typer.Option(None, "--version", "-r", help=VERSION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every system x version: scale, batch, ruleset, provenance and NVIDIA's published score."""
    if ctx.invoked_subcommand is not None:
        return
    from hpcrepro.catalog import load_catalog

    _check_version(version)
    rows = _rows(load_catalog(), version)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hpcrepro system catalog")
    for column, justify in (
        ("system", "left"),
        ("version", "left"),
        ("nodes x GPUs", "right"),
        ("per-GPU batch", "right"),
        ("global batch", "right"),
        ("ruleset", "left"),
        ("provenance", "left"),
        ("published (min)", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        score = row["published_score_minutes"]
        table.add_row(
            row["system"],
            row["version"],
            f"{row['nodes']} x {row['gpus_per_node']}",
            str(row["batch_per_gpu"]),
            str(row["global_batch"]),
            row["ruleset"],
            row["provenance"],
            "-" if score is None else f"{score:g}",
        )
    Console(width=max(120, Console().width)).print(table)


def _details(catalog: Catalog, system: str, version: str) -> dict[str, Any]:
    item = catalog.get(system, version)
    data = item.model_dump(mode="json")
    data["hparams"] = item.hparams.exports()
    data["env"] = catalog.raw(system, version)["env"]
    data["global_batch"] = item.global_batch
    data["total_gpus"] = item.total_gpus
    data["eval_epochs"] = item.eval_epochs()
    data["target_epoch"] = item.target_epoch()
    return data


@systems_app.command("show")
def show(
    name: str = typer.Argument(..., help="System name, e.g. dgxa100_8x8."),
    version: str | None = typer.Option(None, "--version", "-r", help=VERSION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Every value of one system, per version, with provenance, notes and where it came from."""
    from hpcrepro.catalog import load_catalog

    _check_version(version)
    catalog = load_catalog()
    entry = catalog.entry(name)
    versions = [version] if version else list(entry.versions)
    details = {ver: _details(catalog, name, ver) for ver in versions}
    if as_json:
        payload = {
            "system": entry.system,
            "title": entry.title,
            "gpu_model": entry.gpu_model,
            "versions": details,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(width=max(120, Console().width), highlight=False, soft_wrap=True)
    console.print(
        f"[bold]{escape(entry.system)}[/bold]: {escape(entry.title)} ({escape(entry.gpu_model)})"
    )
    for ver, data in details.items():
        origin = catalog.origin(name, ver)
        console.print()
        console.print(
            f"[bold]{ver}[/bold]  provenance: {data['provenance']}   ruleset: {data['ruleset']}"
        )
        lines = [
            ("source", data["source"]),
            ("derived_from", data["derived_from"]),
            ("note", data["note"]),
            ("dgxsystem", data["dgxsystem"]),
            (
                "scale",
                f"{data['nodes']} node(s) x {data['gpus_per_node']} GPUs"
                f" = {data['total_gpus']} GPUs",
            ),
            ("batch", f"{data['batch_per_gpu']} per GPU, {data['global_batch']} global"),
            (
                "time limit",
                f"{data['minutes_per_run']:g} min per run + "
                f"{data['walltime_overhead_minutes']:g} min",
            ),
            ("implementation", data["implementation"]),
            ("container_base", data["container_base"]),
            ("sbatch_network", data["sbatch_network"]),
            (
                "evaluations",
                f"epochs {', '.join(map(str, data['eval_epochs']))}; "
                f"target epoch {data['target_epoch']}",
            ),
        ]
        published = data["published"]
        if published:
            ident = f", {published['result_id']}" if published["result_id"] else ""
            lines.append(
                (
                    "published",
                    f"{published['score_minutes']:g} min ({published['result_dir']}{ident})",
                )
            )
        else:
            lines.append(("published", "none"))
        for label, value in lines:
            if value is not None:
                console.print(f"  {label:<15} {escape(str(value))}")
        console.print("  hparams:")
        for key, value in data["hparams"].items():
            console.print(f"    {key}={escape(value)}")
        console.print("  env (system over common layer):")
        for key, value in data["env"].items():
            console.print(f"    {key}={escape(value)}  [dim]# {escape(origin[f'env.{key}'])}[/dim]")


def register(app: typer.Typer) -> None:
    """Add `hpcrepro systems` to the main app."""
    app.add_typer(systems_app, name="systems")
