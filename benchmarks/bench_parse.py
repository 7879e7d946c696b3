"""Parse-and-score speed: hpcrepro vs mlperf-logging's parser+summarizer vs `cat`, one run.

On the same corpus (benchmarks/build_corpus.py, >= 1 GB, page cache warmed first):
- `cat` of every file to /dev/null: the physical limit of reading the bytes;
- hpcrepro: summarize_run (stream, parse, rule engine) for every log + score_runs (olympic score,
  RCP check) for every set, in one process and with 2 worker processes;
- mlperf-logging 4.1.x: for every set, the summarizer's own `_compute_strong_score_standalone`
  (compliance check + parse of each file, olympic score, scaling.json) plus its RCP
  `check_directory`, as `result_summarizer` does for a closed-division benchmark folder.
Scores must be identical wherever mlperf-logging produces one; sets where it crashes (records
missing `value`/`metadata`) are counted and reported.

    PYTHONPATH=src python benchmarks/bench_parse.py [--corpus DIR] [--gigabytes 1.0] [--json OUT]
        [--workers N] [--skip-mlperf-logging]

`--workers` defaults to the CPU count; `--skip-mlperf-logging` leaves out the slow anchor (and the
score comparison) for quick iterations: recorded figures must come from a run without it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import build


def corpus_sets(corpus: Path) -> list[tuple[Path, str]]:
    return [(folder, (folder / "ruleset").read_text().strip())
            for folder in sorted(corpus.iterdir()) if (folder / "ruleset").is_file()]


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(corpus.glob("*/result_*.txt"))


def time_cat(files: list[Path]) -> float:
    start = time.perf_counter()
    for first in range(0, len(files), 500):
        subprocess.run(["cat", *map(str, files[first : first + 500])], stdout=subprocess.DEVNULL,
                       check=True)
    return time.perf_counter() - start


def hpcrepro_score(item: tuple[Path, str]) -> tuple[str, float | None]:
    from hpcrepro.results.inputs import find_logs
    from hpcrepro.results.runs import summarize_run
    from hpcrepro.results.score import read_scaling_json, score_runs

    folder, ruleset = item
    runs = [summarize_run(p, ruleset) for p in find_logs(folder)]
    score = score_runs(runs, ruleset, read_scaling_json(folder), use_rcp_factor=False)
    return folder.name, score.minutes


def time_hpcrepro(sets: list[tuple[Path, str]], workers: int) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds of this process and its workers, scores."""
    start = time.perf_counter()
    cpu = _cpu_seconds()
    if workers == 1:
        results = [hpcrepro_score(item) for item in sets]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(hpcrepro_score, sets, chunksize=4))
    return time.perf_counter() - start, _cpu_seconds() - cpu, dict(results)


def _cpu_seconds() -> float:
    own, children = os.times()[:2], os.times()[2:4]
    return sum(own) + sum(children)


def time_mlperf_logging(sets: list[tuple[Path, str]]) -> tuple[float, dict, dict]:
    from mlperf_logging.compliance_checker import mlp_compliance
    from mlperf_logging.rcp_checker import rcp_checker
    from mlperf_logging.result_summarizer import result_summarizer

    logging.disable(logging.CRITICAL)
    scores: dict[str, float | None] = {}
    crashes: dict[str, str] = {}
    start = time.perf_counter()
    for folder, ruleset in sets:
        mlp_compliance.enqueued_configs.clear()  # stale configs leak after a crash otherwise
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                score, _power, _scaling = result_summarizer._compute_strong_score_standalone(
                    "resnet", folder.name, False, str(folder), "training", ruleset)
                with contextlib.suppress(Exception):  # mixed batch sizes crash its RCP step
                    rcp_checker.check_directory(str(folder), "training", ruleset, False, False,
                                                rcp_pass="pruned_rcps", set_scaling=False)
            scores[folder.name] = score
        except Exception as error:
            crashes[folder.name] = f"{type(error).__name__}: {error}"
    logging.disable(logging.NOTSET)
    return time.perf_counter() - start, scores, crashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path,
                        default=Path(tempfile.gettempdir()) / "hpcrepro-bench-corpus")
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes for the parallel hpcrepro run (default: CPUs)")
    parser.add_argument("--skip-mlperf-logging", action="store_true",
                        help="leave out the slow anchor (not for recorded figures)")
    args = parser.parse_args()
    if not args.corpus.is_dir() or not corpus_sets(args.corpus):
        build(args.corpus, args.gigabytes)
    sets = corpus_sets(args.corpus)
    files = corpus_files(args.corpus)
    size = sum(f.stat().st_size for f in files)
    print(f"corpus: {args.corpus}: {len(sets)} result sets, {len(files)} logs, "
          f"{size / (1 << 30):.3f} GiB", flush=True)
    time_cat(files)  # warm the page cache
    cat_s = time_cat(files)
    print(f"cat > /dev/null:               {cat_s:8.2f} s", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    one_s, one_cpu, ours = time_hpcrepro(sets, 1)
    print(f"hpcrepro, 1 process:           {one_s:8.2f} s  ({one_s / cat_s:.2f}x cat; "
          f"{one_cpu:.2f} CPU s)", flush=True)
    workers = args.workers
    two_s, two_cpu, ours_parallel = time_hpcrepro(sets, workers)
    print(f"hpcrepro, {workers} processes:         {two_s:8.2f} s  ({two_s / cat_s:.2f}x cat; "
          f"{two_cpu:.2f} CPU s)", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    if args.skip_mlperf_logging:
        mismatches = [n for n in ours if ours_parallel[n] != ours[n]]
        print(json.dumps({"cat_s": cat_s, "hpcrepro_1proc_s": one_s,
                          f"hpcrepro_{workers}proc_s": two_s, "parallel_mismatches": mismatches}))
        return
    anchor_s, theirs, crashes = time_mlperf_logging(sets)
    print(f"mlperf-logging parse+summarize: {anchor_s:8.2f} s", flush=True)
    compared = [name for name in theirs]
    mismatches = [n for n in compared if theirs[n] != ours[n] or ours_parallel[n] != ours[n]]
    figures = {
        "corpus_bytes": size, "sets": len(sets), "logs": len(files),
        "cat_s": cat_s, "hpcrepro_1proc_s": one_s, f"hpcrepro_{workers}proc_s": two_s,
        "hpcrepro_1proc_cpu_s": one_cpu, f"hpcrepro_{workers}proc_cpu_s": two_cpu,
        "load_average_1min": os.getloadavg()[0],
        "mlperf_logging_s": anchor_s,
        "speedup_vs_mlperf_logging_1proc": anchor_s / one_s,
        f"speedup_vs_mlperf_logging_{workers}proc": anchor_s / two_s,
        "ratio_to_cat_1proc": one_s / cat_s, f"ratio_to_cat_{workers}proc": two_s / cat_s,
        "sets_compared": len(compared), "score_mismatches": mismatches,
        "sets_without_score": sum(1 for n in compared if theirs[n] is None),
        "mlperf_logging_crashes": len(crashes),
        "crash_examples": sorted(set(crashes.values()))[:3],
        "hpcrepro_scores_on_crashed_sets": sum(1 for n in crashes if ours[n] is not None),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    if mismatches:
        sys.exit(f"score mismatch on {len(mismatches)} sets: {mismatches[:5]}")


if __name__ == "__main__":
    main()
