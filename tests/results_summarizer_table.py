"""Regenerate tests/data/results/summarizer_scores.csv with mlperf-logging's own summarizer.

For every result directory of the research logs (tests/data/results/mlperf-resnet-results.tar.xz)
this runs, in a fresh process per directory (the compliance checker keeps global state),
`result_summarizer._compute_strong_score_standalone(..., return_full_scores=True)`, the function the
summarizer CLI calls per benchmark folder, and stores its score and per-run minutes.

    PYTHONPATH=src python tests/results_summarizer_table.py [EXTRACTED_FOLDER]
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE / "data" / "results" / "mlperf-resnet-results.tar.xz"
TABLE = HERE / "data" / "results" / "summarizer_scores.csv"

PROBE = r"""
import contextlib, io, json, sys
from mlperf_logging.result_summarizer import result_summarizer as rs
folder, ruleset = sys.argv[1], sys.argv[2]
with contextlib.redirect_stdout(io.StringIO()):
    scores, _, score, _, scaling = rs._compute_strong_score_standalone(
        "resnet", "system", False, folder, "training", ruleset, return_full_scores=True)
print(json.dumps({"score": score, "scaling": scaling,
                  "runs": {k.rsplit("/", 1)[1]: v for k, v in scores.items()}}))
"""


def summarizer_result(folder: Path, ruleset: str) -> dict:
    """Run the official summarizer function on one directory in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(folder), ruleset],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def directories(root: Path) -> list[tuple[str, Path]]:
    """(ruleset, folder) for every stored result directory."""
    found = []
    for folder in sorted(root.glob("v*/*/*")):
        if any(folder.glob("result_*.txt")):
            found.append((folder.relative_to(root).parts[0][1:] + ".0", folder))
    return found


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(sys.argv[1]) if len(sys.argv) > 1 else None
        if root is None:
            with tarfile.open(ARCHIVE) as archive:
                archive.extractall(scratch, filter="data")
            root = Path(scratch)
        with open(TABLE, "w", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["directory", "ruleset", "score_minutes", "scaling_factor", "runs"])
            for ruleset, folder in directories(root):
                result = summarizer_result(folder, ruleset)
                writer.writerow([folder.relative_to(root).as_posix(), ruleset,
                                 repr(result["score"]), repr(result["scaling"]),
                                 json.dumps(result["runs"], sort_keys=True)])
                print(folder.relative_to(root), result["score"], flush=True)


if __name__ == "__main__":
    main()
