"""PNG: eval accuracy against time for every run, and time to train against NVIDIA's score.

The time-to-train panel is a dot plot on a zoomed axis, not bars from zero: the runs of one
system differ by a few tenths of a percent, which bars from zero hide. Each run is labelled by its
name (run-01 as `status` shows it, result_0 for a published folder) and drawn by its role in the
score: counted, dropped by the olympic mean (fastest and slowest), outside the scored window, or
not counted at all (aborted, failed, non-compliant: grey, hatched, with the reason).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcrepro.results.collect import Collection
from hpcrepro.results.runs import RunResult
from hpcrepro.results.score import MAX_DROPPED
from hpcrepro.rounds import TARGET_ACCURACY
from hpcrepro.safeopen import write_atomically

if TYPE_CHECKING:  # matplotlib loads only when a plot is drawn
    from matplotlib.axes import Axes

COUNTED = "counted"
DROPPED_FASTEST = "dropped (fastest)"
DROPPED_SLOWEST = "dropped (slowest)"
OUTSIDE_WINDOW = "outside the scored window"
NOT_COUNTED = "does not count"
_RUN_NAME = re.compile(r"^(run-\d+)")


def run_name(run: RunResult) -> str:
    """The run's name as `status` shows it: run-01 of run-01_123_2401….log; else the file's
    stem (result_0)."""
    stem = Path(run.path).stem
    match = _RUN_NAME.match(stem)
    return match.group(1) if match else stem


@dataclass(frozen=True)
class PlotRun:
    name: str
    run: RunResult
    role: str
    why: str = ""  # for runs that do not count: the reason


def roles(collection: Collection) -> list[PlotRun]:
    """Each run with its role in the olympic score, in log order.

    The olympic mean drops the fastest valid run and the slowest; a failed run of the window is
    the slowest (mlperf-logging's summarizer), so then only the fastest valid run is dropped.
    """
    scored = {id(run) for run in collection.scored_runs}
    window = [run for run in collection.runs if id(run) in scored]
    valid = sorted((run for run in window if run.valid),
                   key=lambda run: run.time_to_train_minutes or 0.0)
    failed = len(window) - len(valid)
    fastest = {id(run) for run in valid[:MAX_DROPPED]} if collection.score.valid else set()
    keep_slow = MAX_DROPPED - failed
    slowest = ({id(run) for run in valid[len(valid) - keep_slow:]}
               if collection.score.valid and keep_slow > 0 else set())
    found = []
    for run in collection.runs:
        if not run.valid:
            role, why = NOT_COUNTED, f"{run.status}: {run.reason}"
        elif id(run) not in scored:
            role, why = OUTSIDE_WINDOW, ""
        elif id(run) in fastest:
            role, why = DROPPED_FASTEST, ""
        elif id(run) in slowest:
            role, why = DROPPED_SLOWEST, ""
        else:
            role, why = COUNTED, ""
        found.append(PlotRun(run_name(run), run, role, why))
    return found


_STYLE = {  # marker, face colour, edge colour
    COUNTED: ("o", "tab:green", "tab:green"),
    DROPPED_FASTEST: ("v", "white", "tab:orange"),
    DROPPED_SLOWEST: ("^", "white", "tab:orange"),
    OUTSIDE_WINDOW: ("o", "white", "tab:gray"),
}


def _curves(axes: Axes, runs: list[PlotRun]) -> None:
    for item in runs:
        if not item.run.evals:
            continue
        xs, ys = zip(*item.run.evals, strict=True)
        failed = item.role == NOT_COUNTED
        axes.plot(
            xs, ys, marker="x" if failed else "o", markersize=3,
            linestyle="--" if failed else "-", color="0.6" if failed else None,
            label=f"{item.name} ({item.run.status})",
        )
    axes.axhline(TARGET_ACCURACY, color="red", linestyle=":", label=f"target {TARGET_ACCURACY}")


def _times(ax: Axes, collection: Collection, runs: list[PlotRun]) -> None:
    """Dots on an axis zoomed to the runs and the reference lines; failed runs as hatched grey
    boxes along the top with their status, since they have no time to train."""
    import matplotlib.ticker as ticker

    minutes = [item.run.time_to_train_minutes or 0.0 for item in runs if item.role != NOT_COUNTED]
    published = collection.inputs.published_minutes
    score = collection.score.minutes
    levels = minutes + [v for v in (published, score) if v]
    low, high = (min(levels), max(levels)) if levels else (0.0, 1.0)
    pad = max((high - low) * 0.15, high * 0.002, 1e-3)
    top = high + pad
    for position, item in enumerate(runs):
        if item.role == NOT_COUNTED:
            ax.bar(position, pad * 0.8, bottom=top - pad * 0.9, width=0.6, color="0.85",
                   edgecolor="0.4", hatch="//", label=NOT_COUNTED)
            ax.annotate(item.run.status, (position, top - pad * 0.5), ha="center", va="center",
                        fontsize=7, color="0.2")
            continue
        marker, face, edge = _STYLE[item.role]
        ax.scatter([position], [item.run.time_to_train_minutes or 0.0], marker=marker, s=70,
                   facecolors=face, edgecolors=edge, linewidths=1.8, zorder=3,
                   label=item.role)
    olympic = collection.score.olympic_minutes
    if olympic and score and olympic != score:
        ax.axhline(olympic, color="tab:blue", linestyle=":", linewidth=1.2, zorder=2,
                   label=f"olympic mean {olympic:.4f} min (unscaled)")
    if score:
        ax.axhline(score, color="tab:blue", linewidth=1.5, zorder=2,
                   label=f"hpcrepro score {score:.4f} min")
        ax.annotate(f"score {score:.4f}", (0.0, score), xycoords=("axes fraction", "data"),
                    xytext=(4, 3), textcoords="offset points", ha="left", va="bottom",
                    fontsize=8, color="tab:blue")
    if published:
        # dashed, darker and drawn above the score line: visible even where the two coincide
        ax.axhline(published, color="black", linestyle=(0, (6, 3)), linewidth=1.8, zorder=4,
                   label=f"NVIDIA published {published:.4f} min")
        ax.annotate(f"NVIDIA {published:.4f}", (1.0, published),
                    xycoords=("axes fraction", "data"), xytext=(-4, -3),
                    textcoords="offset points", ha="right", va="top", fontsize=8)
    ax.set_xticks(range(len(runs)), [item.name for item in runs], rotation=30, ha="right")
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_ylim(low - pad, top)
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3f"))
    ax.set_ylabel("time to train (minutes)")
    fastest, slowest = (min(minutes), max(minutes)) if minutes else (0.0, 0.0)
    spread = (slowest - fastest) / fastest * 100 if fastest > 0 else 0.0
    ax.set_title(f"Time to train (axis zoomed, not from 0; spread {spread:.2f} %)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")


def plot_png(collection: Collection) -> bytes:
    """The plot as PNG bytes (1300 x 500 pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = roles(collection)
    fig, (curves, times) = plt.subplots(1, 2, figsize=(13, 5), dpi=100)
    _curves(curves, runs)
    curves.set_xlabel("minutes since run_start")
    curves.set_ylabel("eval accuracy (top-1)")
    curves.set_title("Eval accuracy per run (grey dashed: does not count)")
    curves.legend(fontsize=7)
    _times(times, collection, runs)
    inputs = collection.inputs
    fig.suptitle(f"{inputs.system or inputs.folder.name} {inputs.version}")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    return image.getvalue()


def write_plot(collection: Collection, out: Path) -> Path:
    write_atomically(out, plot_png(collection), f"--plot {out}")
    return out
