"""Where parse-and-score spends its time per log, against the budget that "3x cat" leaves.

On every 10th result set of the bench_parse corpus (build it with bench_parse.py first), CPU time
per log of: reading the file, one bytes.count pass, the scan's re.findall, the whole summary
scan, mlperf-logging's rules alone (replaying the exact records summarize_run feeds them into
fresh checkers) and summarize_run itself.

    PYTHONPATH=src python benchmarks/parse_budget.py [--corpus DIR] [--every 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_parse import corpus_sets

from hpcrepro.results import mllog, rules, summaryscan
from hpcrepro.results.inputs import find_logs
from hpcrepro.results.runs import summarize_run


def per_log_ms(logs: list[tuple[Path, str]], work: Callable[[Path, str], Any]) -> float:
    """Best of 3 passes (after one warm-up), CPU milliseconds per log."""
    best = float("inf")
    for attempt in range(4):
        start = time.process_time()
        for path, ruleset in logs:
            work(path, ruleset)
        if attempt:
            best = min(best, time.process_time() - start)
    return best * 1000 / len(logs)


def blocks(path: Path) -> list[tuple[bytes, int]]:
    with open(path, "rb") as handle:
        return list(mllog.BlockReader(handle, str(path), lambda _problem: None))


def scan(path: Path, ruleset: str) -> None:
    checker = rules.StreamingChecker(ruleset)
    copies = {"run_start", "run_stop"}
    for _record in summaryscan.SummaryScan(
            path, lambda _problem: None, needed=checker.keys | {"eval_accuracy"},
            copies_needed=checker.copy_unsafe | copies,
            copies_fed=checker.copy_unsafe - copies, feed_copy=lambda *_args: None):
        pass


def recorded_feeds(logs: list[tuple[Path, str]]) -> dict[Path, list[tuple[Any, ...]]]:
    """The arguments of every StreamingChecker.feed call summarize_run makes, per log."""
    feeds: dict[Path, list[tuple[Any, ...]]] = {}
    original = rules.StreamingChecker.feed
    current: list[tuple[Any, ...]] = []

    def record(self: rules.StreamingChecker, *args: Any) -> None:
        current.append(args)
        original(self, *args)

    rules.StreamingChecker.feed = record
    try:
        for path, ruleset in logs:
            current = feeds[path] = []
            summarize_run(path, ruleset)
    finally:
        rules.StreamingChecker.feed = original
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path,
                        default=Path(tempfile.gettempdir()) / "hpcrepro-bench-corpus")
    parser.add_argument("--every", type=int, default=10, help="use every Nth result set")
    args = parser.parse_args()
    logs = [(path, ruleset) for folder, ruleset in corpus_sets(args.corpus)[:: args.every]
            for path in find_logs(folder)]
    feeds = recorded_feeds(logs)

    def replay(path: Path, ruleset: str) -> None:
        checker = rules.StreamingChecker(ruleset)
        for call in feeds[path]:
            checker.feed(*call)
        checker.verdict()

    parts: list[tuple[str, Callable[[Path, str], Any]]] = [
        ("read the file in blocks", lambda p, _r: blocks(p)),
        ("one bytes.count pass", lambda p, _r: [b.count(mllog.TOKEN, 0, e) for b, e in blocks(p)]),
        ("re.findall of the records",
         lambda p, _r: [summaryscan._RECORD.findall(b, 0, e) for b, e in blocks(p)]),
        ("summary scan (copies, decoding)", scan),
        ("mlperf-logging's rules alone (replayed feeds)", replay),
        ("summarize_run", summarize_run),
    ]
    calls = sum(len(f) for f in feeds.values()) / len(logs)
    print(f"{len(logs)} logs, {calls:.0f} rule feeds per log")
    for name, work in parts:
        print(f"{name:48s} {per_log_ms(logs, work):6.3f} ms/log", flush=True)


if __name__ == "__main__":
    main()
