"""PNG: eval accuracy against time for every run, and time to train against NVIDIA's score."""

from __future__ import annotations

import io
from pathlib import Path

from hpcrepro.results.collect import Collection
from hpcrepro.rounds import TARGET_ACCURACY
from hpcrepro.safeopen import write_atomically


def write_plot(collection: Collection, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(13, 5), dpi=100)
    for index, run in enumerate(collection.runs):
        if run.evals:
            xs, ys = zip(*run.evals, strict=True)
            curves.plot(xs, ys, marker="o", markersize=3, label=f"run {index} ({run.status})")
    curves.axhline(TARGET_ACCURACY, color="red", linestyle="--", label=f"target {TARGET_ACCURACY}")
    curves.set_xlabel("minutes since run_start")
    curves.set_ylabel("eval accuracy (top-1)")
    curves.set_title("Eval accuracy per run")
    curves.legend(fontsize=8)
    names = [f"run {i}" for i in range(len(collection.runs))]
    minutes = [r.time_to_train_minutes or 0.0 for r in collection.runs]
    colours = ["tab:green" if r.valid else "tab:gray" for r in collection.runs]
    bars.bar(names, minutes, color=colours)
    published = collection.inputs.published_minutes
    if published:
        bars.axhline(published, color="black", linestyle="--", label=f"NVIDIA {published:.3f} min")
    if collection.score.minutes is not None:
        bars.axhline(
            collection.score.minutes,
            color="tab:blue",
            label=f"score {collection.score.minutes:.3f} min",
        )
    bars.set_ylabel("time to train (minutes)")
    bars.set_title("Time to train (grey: does not count)")
    if published or collection.score.minutes is not None:
        bars.legend(fontsize=8)
    fig.suptitle(
        f"{collection.inputs.system or collection.inputs.folder.name} {collection.inputs.version}"
    )
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    write_atomically(out, image.getvalue(), f"--plot {out}")
    return out
