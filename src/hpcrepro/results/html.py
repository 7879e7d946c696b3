"""`collect --format html`: one self-contained page with the score, every run's verdict and
reason, the plot and the provenance.

Self-contained: CSS inline, the plot an embedded PNG (data: URI), nothing fetched; a Content
Security Policy forbids every other source, so a page opened from a shared folder loads nothing.
Every text that comes from a log, a file name or the campaign is escaped (`html.escape`): a
hostile log line cannot add markup.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from hpcrepro.results.collect import Collection

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1340px;
       color: #1b1b1b; background: #fff; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #c8c8c8; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.counted td.role { background: #dff3df; } tr.dropped td.role { background: #fff0d9; }
tr.void td { color: #666; background: #f3f3f3; }
.score { font-size: 1.25em; padding: .6em 1em; border-left: 6px solid #2c7be5;
         background: #eef5ff; } .score.invalid { border-color: #c62828; background: #fdecea; }
ul.lines li { font-family: ui-monospace, monospace; font-size: 12.5px; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12.5px; word-break: break-all; }
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _runs_table(collection: Collection, rows: list[dict[str, Any]]) -> list[str]:
    from hpcrepro.results.plot import COUNTED, NOT_COUNTED, roles

    out = ["<table><tr><th>run</th><th>file</th><th>status</th><th>minutes</th>"
           "<th>epochs</th><th>best accuracy</th><th>compliance</th><th>in the score</th>"
           "<th>reason</th></tr>"]
    for item, row in zip(roles(collection), rows, strict=True):
        kind = ("counted" if item.role == COUNTED else "void" if item.role == NOT_COUNTED
                else "dropped")
        out.append(
            f'<tr class="{kind}"><td>{escape(item.name)}</td><td class="mono">'
            f'{_cell(row["file"])}</td><td>{_cell(row["status"])}</td>'
            f'<td class="num">{_cell(row["minutes"])}</td><td class="num">'
            f'{_cell(row["epochs"])}</td><td class="num">{_cell(row["best_accuracy"])}</td>'
            f'<td>{_cell(row["compliance"])}</td><td class="role">{escape(item.role)}</td>'
            f'<td>{_cell(row["reason"] or "")}</td></tr>'
        )
    out.append("</table>")
    return out


def render_html(collection: Collection, rows: list[dict[str, Any]], lines: list[str]) -> str:
    """The page; `rows` and `lines` are the report's run rows and summary lines."""
    from hpcrepro.provenance import labelled
    from hpcrepro.results.plot import plot_png

    inputs = collection.inputs
    title = f"{inputs.system or inputs.folder.name} {inputs.version}"
    score = collection.score
    headline = (f"Score: <b>{score.minutes:.4f} min</b>" if score.minutes is not None
                else f"No valid score: {escape(score.reason)}")
    published = inputs.published_minutes
    if published and score.minutes is not None:
        headline += (f" &middot; NVIDIA published {published:.4f} min &middot; ratio "
                     f"{score.minutes / published:.3f}")
    png = base64.b64encode(plot_png(collection)).decode("ascii")
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>hpcrepro: {escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>ResNet-50 time to train: {escape(title)}</h1>",
        f'<p class="mono">{escape(str(inputs.folder))}</p>',
        f'<p class="score{"" if score.valid else " invalid"}">{headline}</p>',
        "<h2>Runs and verdicts</h2>",
        *_runs_table(collection, rows),
    ]
    if collection.skipped:
        page += ["<h2>Not scored</h2>", '<ul class="lines">',
                 *(f"<li>{escape(str(path))}: {escape(why)}</li>"
                   for path, why in collection.skipped), "</ul>"]
    page += ["<h2>Summary</h2>", '<ul class="lines">',
             *(f"<li>{escape(line)}</li>" for line in lines), "</ul>",
             "<h2>Plot</h2>",
             f'<img class="plot" width="1300" height="500" alt="eval accuracy and time to train '
             f'per run" src="data:image/png;base64,{png}">']
    provenance = labelled(collection.provenance)
    page += ["<h2>Provenance</h2>"]
    if provenance:
        page += ["<table>", *(f'<tr><th>{escape(label)}</th><td class="mono">{escape(value)}'
                              "</td></tr>" for label, value in provenance), "</table>"]
    else:
        page.append("<p>nothing recorded</p>")
    page.append("</body></html>")
    return "\n".join(page) + "\n"
