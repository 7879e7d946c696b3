"""`hpcrepro collect`: score a campaign's (or a folder's) run logs, report, plot, package.

Only typer and the standard library are imported here; the results package loads on use.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from hpcrepro.errors import UserError

FORMATS = ("table", "json", "csv", "md", "html")
SCALING_MODES = ("auto", "folder", "rcp")


def collect(
    folder: Path = typer.Argument(..., help="Campaign folder or folder of run logs."),
    version: str | None = typer.Option(
        None, "--version", "-r", help="MLPerf round, e.g. r4.0 (else from the logs)."
    ),
    system: str | None = typer.Option(
        None, "--system", "-s", help="System name (catalog entry)."
    ),
    fmt: str = typer.Option(
        "table", "--format", help="table, json, csv, md or html (one self-contained page)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the report to this file instead of stdout."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG plot here."),
    package: Path | None = typer.Option(None, "--package", help="Write a submission tree here."),
    system_json: Path | None = typer.Option(
        None,
        "--system-json",
        help="An MLPerf system description (hpcrepro detect --mlperf-json) whose fields fill "
        "the package's empty ones.",
    ),
    published: float | None = typer.Option(
        None, "--published", help="NVIDIA's published score in minutes (overrides the catalog)."
    ),
    scaling: str = typer.Option(
        "auto",
        "--scaling",
        help="auto: scaling.json if present, else the RCP factor; folder: scaling.json or 1.0 "
        "(like mlperf-logging's summarizer); rcp: always the RCP factor.",
    ),
    official: bool = typer.Option(
        True,
        "--official-check/--no-official-check",
        help="Also run mlperf-logging's compliance checker on every log (subprocess).",
    ),
) -> None:
    """Score run logs: per-run table, olympic score, RCP verdict, ratio to NVIDIA's score.

    Exit code 0 when a valid score exists, 1 when not (the reason is printed), 2 for user errors.
    """
    if fmt not in FORMATS:
        raise UserError(
            f"unknown format '{fmt}'", where="--format", hint="use one of: " + ", ".join(FORMATS)
        )
    if scaling not in SCALING_MODES:
        raise UserError(
            f"unknown scaling mode '{scaling}'",
            where="--scaling",
            hint="use one of: " + ", ".join(SCALING_MODES),
        )
    if published is not None and not (math.isfinite(published) and published > 0):
        raise UserError(
            f"{published!r} is not a time in minutes",
            where="--published",
            hint="give NVIDIA's score in minutes, e.g. --published 13.4",
        )
    from hpcrepro.results.collect import collect as run_collect
    from hpcrepro.results.inputs import resolve
    from hpcrepro.results.outputs import check_output_path, check_package_path, check_plot_path
    from hpcrepro.results.report import render

    if plot is not None:
        check_plot_path(plot)
    if package is not None:
        check_package_path(package)
    if output is not None:
        check_output_path(output)
    detected = _read_system_json(system_json) if system_json is not None else None

    from hpcrepro.campaign.collect import campaign_folder, not_counted

    inputs = resolve(campaign_folder(folder), version, system, published, exclude=not_counted)
    collection = run_collect(inputs, official=official, scaling=scaling)
    text = render(collection, fmt, fold=output is None and sys.stdout.isatty())
    if output is None:
        sys.stdout.write(text)
    else:
        from hpcrepro.safeopen import write_atomically

        write_atomically(output, text.encode(), f"--output {output}")
        sys.stderr.write(f"report written to {output}\n")
    if plot is not None:
        from hpcrepro.results.plot import write_plot

        write_plot(collection, plot)
        sys.stderr.write(f"plot written to {plot}\n")
    if package is not None and not collection.score.valid:
        sys.stderr.write("no submission tree written: the runs have no valid score\n")
    elif package is not None:
        from hpcrepro.results.package import write_package

        written = write_package(collection, package, system, detected)
        sys.stderr.write(
            f"submission tree written to {written.folder} (system {written.system_name})\n"
        )
        if written.missing_fields:
            sys.stderr.write(
                "system fields to fill in: " + ", ".join(written.missing_fields) + "\n"
            )
        if official:
            from hpcrepro.results.compliance import run_package_checker

            verdict = run_package_checker(written.folder, collection.inputs.ruleset)
            sys.stderr.write(
                "mlperf-logging's package checker: "
                + (
                    "no errors"
                    if verdict.valid
                    else f"REJECTED\n{verdict.detail}"
                    if verdict.checked
                    else f"no verdict: {verdict.detail}"
                )
                + "\n"
            )
    if not collection.score.valid:
        sys.stderr.write(f"no valid score: {collection.score.reason}\n")
        raise typer.Exit(1)


def _read_system_json(path: Path) -> dict[str, object]:
    from hpcrepro.jsonio import read_json

    data = read_json(path, hint="give the file `hpcrepro detect --mlperf-json FILE` wrote")
    if not isinstance(data, dict):
        raise UserError(f"holds a JSON {type(data).__name__}, not an object", where=str(path),
                        hint="a system description is an object of fields")
    return data


def register(app: typer.Typer) -> None:
    """Add `collect` to the main app."""
    app.command("collect")(collect)
