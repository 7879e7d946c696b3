"""Render a Collection as a terminal table, JSON, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from hpcrepro.results.collect import Collection

FORMATS = ("table", "json", "csv", "md", "html")
COLUMNS = ("file", "status", "minutes", "epochs", "best_accuracy", "compliance", "counts", "reason")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def run_rows(collection: Collection) -> list[dict[str, Any]]:
    base = collection.inputs.folder
    rows = []
    for run in collection.runs:
        path = Path(run.path)
        rows.append({
            "file": str(path.relative_to(base)) if path.is_relative_to(base) else run.path,
            "status": run.status,
            "minutes": run.time_to_train_minutes,
            "epochs": run.epochs_to_target,
            "best_accuracy": run.best_accuracy,
            "compliance": "pass" if run.compliant else "FAIL",
            "counts": run.valid,
            "reason": run.reason,
        })
    return rows


def summary(collection: Collection) -> dict[str, Any]:
    score = collection.score
    check = score.rcp
    return {
        "folder": str(collection.inputs.folder),
        "system": collection.inputs.system,
        "version": collection.inputs.version,
        "ruleset": collection.inputs.ruleset,
        "score_minutes": score.minutes,
        "olympic_minutes": score.olympic_minutes,
        "scaling_factor": score.scaling_factor,
        "scaling_source": score.scaling_source,
        "dropped_runs": score.dropped,
        "rcp_pass": None if check is None else check.passed,
        "rcp_message": None if check is None else check.message,
        "rcp_scaling_factor": None if check is None else check.scaling_factor,
        "published_minutes": collection.inputs.published_minutes,
        "published_source": collection.inputs.published_source or None,
        "ratio_to_published": collection.ratio_to_published,
        "valid": score.valid,
        "reason": score.reason,
        "official_compliance_checked": collection.official_checked,
        "notes": collection.notes,
        "problems": problem_lines(collection),
        "skipped": [f"{p}: {why}" for p, why in collection.skipped],
        "provenance": collection.provenance,
    }


PROBLEMS_PER_RUN = 5


def problem_lines(collection: Collection) -> list[str]:
    """Each run's log problems as 'file:line: message', a few per run."""
    lines = []
    for run in collection.runs:
        lines += [str(p) for p in run.problems[:PROBLEMS_PER_RUN]]
        if run.problem_count > PROBLEMS_PER_RUN:
            lines.append(f"{run.path}: {run.problem_count - PROBLEMS_PER_RUN} more problems")
    return lines


def _summary_lines(collection: Collection) -> list[str]:
    info = summary(collection)
    lines = []
    if info["valid"]:
        lines.append(f"Score: {info['score_minutes']:.4f} min (olympic "
                     f"{info['olympic_minutes']:.4f} x scaling {info['scaling_factor']:.6f} "
                     f"from {info['scaling_source']})")
    else:
        lines.append(f"No valid score: {info['reason']}")
    if info["rcp_message"]:
        lines.append(f"RCP: {'pass' if info['rcp_pass'] else 'FAIL'} - {info['rcp_message']}")
    if info["published_minutes"]:
        ratio = info["ratio_to_published"]
        lines.append(f"NVIDIA published: {info['published_minutes']:.4f} min; ratio "
                     + ("-" if ratio is None else f"{ratio:.3f}")
                     + (f" (from {info['published_source']})" if info["published_source"]
                        else ""))
    else:
        lines.append("NVIDIA published: unknown for this system/version")
    lines += [f"note: {n}" for n in info["notes"]]
    lines += [f"problem: {p}" for p in info["problems"]]
    lines += [f"skipped: {s}" for s in info["skipped"]]
    return lines


def _provenance_md(collection: Collection) -> list[str]:
    from hpcrepro.provenance import labelled

    rows = labelled(collection.provenance)
    if not rows:
        return []
    return ["", "## Provenance", "", "| what | value |", "|---|---|",
            *(f"| {label} | {value.replace('|', chr(92) + '|')} |" for label, value in rows)]


def _strict_json(value: Any) -> Any:
    """NaN and infinities (a damaged log can hold them) as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def render(collection: Collection, fmt: str, *, fold: bool = True) -> str:
    """The report as text. `fold`: the table fits 160 columns (a terminal); False keeps each
    run on one line, paths whole, for output that is piped to grep or a file."""
    rows = run_rows(collection)
    if fmt == "json":
        document = _strict_json({"summary": summary(collection), "runs": rows})
        return json.dumps(document, indent=2, allow_nan=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "md":
        head = "| " + " | ".join(COLUMNS) + " |"
        rule = "|" + "---|" * len(COLUMNS)
        body = ["| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in COLUMNS) + " |"
                for r in rows]
        return "\n".join([head, rule, *body, "", *(f"- {line}" for line in
                                                     _summary_lines(collection)),
                          *_provenance_md(collection)]) + "\n"
    if fmt == "html":
        from hpcrepro.results.html import render_html

        return render_html(collection, rows, _summary_lines(collection))
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not str: rich would read `[...]` in a file name or a log's text as markup
    table = Table(title=Text(f"{collection.inputs.system or collection.inputs.folder} "
                             f"({collection.inputs.version})"))
    for column in COLUMNS:
        table.add_column(column, no_wrap=not fold)
    for r in rows:
        table.add_row(*(Text(_fmt(r[c])) for c in COLUMNS))
    # unfolded: wide enough for any row (rich sizes the table to its content, not the width)
    console = Console(record=True, width=160 if fold else 100_000)
    with console.capture() as capture:
        console.print(table)
        for line in _summary_lines(collection):
            console.print(line, markup=False)
    return capture.get()
