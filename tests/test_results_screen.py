"""Logs that mlperf-logging's checker cannot finish are screened out and reported per log.

A cut record followed by 2 MiB of NUL bytes (what a crashed node leaves) took the checker hours
(its regex is quadratic in what follows the token; 1 MB > 120 s) and its timeout was an uncaught
TimeoutExpired. Now such a log is not handed to the checker; the note says why, and the rest of
the campaign is checked and scored as before.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.results import compliance
from hpcrepro.results.screen import MAX_RECORD, long_record
from results_helpers import research  # noqa: F401

SRC = Path(__file__).resolve().parent.parent / "src"
EOS_N8 = "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"
TOKEN = b":::MLLOG "
HANG = 300  # the screened run takes seconds (the checker on the 2 MiB line: hours)
CUT = b':::MLLOG {"namespace": "", "time_ms": 17140'


def naive(data: bytes, limit: int) -> tuple[int, bool] | None:
    """(line, NUL bytes in it) of the first line whose text after its last token exceeds
    `limit`, splitting lines at \\n and \\r as Python's text mode (and so mlperf-logging) does."""
    for match in re.finditer(rb"[^\r\n]*", data):
        text = match.group()
        last = text.rfind(TOKEN)
        if last != -1 and len(text) - last - len(TOKEN) > limit:
            return 1 + data.count(b"\n", 0, match.start() + last), b"\0" in text[last:]
    return None


def random_log(rng: random.Random) -> bytes:
    pieces = []
    for _ in range(rng.randrange(1, 40)):
        kind = rng.random()
        if kind < 0.3:
            pieces.append(TOKEN + b"x" * rng.randrange(0, 60))
        elif kind < 0.4:
            pieces.append(b"\0" * rng.randrange(0, 90))
        elif kind < 0.7:
            pieces.append(rng.choice([b"\n", b"\r", b"\r\n", b"\n\n"]))
        else:
            pieces.append(b"0: noise " * rng.randrange(0, 5))
    return b"".join(pieces)


@pytest.mark.parametrize("block", [3, 8, 9, 17, 64, 1 << 20])
def test_the_screen_finds_what_a_line_by_line_reading_finds(tmp_path: Path, block: int) -> None:
    """Tokens and long records cut by block ends, \\r and \\r\\n breaks: the same first line."""
    rng = random.Random(block)
    path = tmp_path / "log"
    for _ in range(400):
        data = random_log(rng)
        limit = rng.randrange(0, 80)
        path.write_bytes(data)
        found = long_record(path, limit=limit, block_size=block)
        expected = naive(data, limit)
        assert (found and (found.line, found.nul_bytes)) == expected, (data, limit)
        assert found is None or found.length > limit


def test_the_screen_passes_every_published_log(research: Path) -> None:  # noqa: F811
    logs = sorted(research.rglob("result_*.txt"))
    assert len(logs) > 300
    assert [log for log in logs if long_record(log) is not None] == []


def test_a_crash_artefact_is_screened_and_named(tmp_path: Path) -> None:
    log = tmp_path / "result_0.txt"
    log.write_bytes(b':::MLLOG {"key": "a"}\n' * 3 + CUT + b"\0" * (2 << 20))
    found = long_record(log)
    assert found is not None and found.line == 4 and found.nul_bytes
    verdict = compliance.run_checker(log, "4.0.0")
    assert not verdict.checked and not verdict.valid
    assert "not run: line 4 holds 2.0 MiB after ':::MLLOG ', NUL bytes" in verdict.detail
    at_limit = CUT + b"\0" * (MAX_RECORD - len(CUT) + len(TOKEN))
    log.write_bytes(at_limit)  # at the limit: still handed to the checker
    assert long_record(log) is None
    log.write_bytes(at_limit + b"\0")
    assert long_record(log) is not None


def test_a_checker_that_does_not_finish_is_a_verdict_not_a_traceback(
    research: Path,  # noqa: F811
) -> None:
    verdict = compliance.run_checker(research / EOS_N8 / "result_0.txt", "4.0.0", timeout=0.001)
    assert not verdict.checked and "did not finish within 0 s" in verdict.detail


def test_collect_reports_the_screened_log_and_checks_the_others(
    research: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(research / EOS_N8, logs)
    crashed = logs / "result_2.txt"
    with open(crashed, "ab") as handle:
        handle.write(CUT + b"\0" * (2 << 20))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "hpcrepro", "collect", str(logs), "--version", "r4.0",
         "--format", "json"],
        capture_output=True, text=True, env=env, timeout=HANG,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    notes = "\n".join(report["summary"]["notes"])
    assert f"{crashed}: mlperf-logging's compliance checker gave no verdict" in notes, notes
    assert "line 348 holds 2.0 MiB after ':::MLLOG '" in notes
    runs = {run["file"]: run for run in report["runs"]}
    assert runs["result_2.txt"]["compliance"] == "FAIL"  # its cut record is unreadable
    assert "unreadable MLLOG record at line 348" in runs["result_2.txt"]["reason"]
    assert [runs[f"result_{i}.txt"]["compliance"] for i in (0, 1, 3)] == ["pass"] * 3
    assert done.returncode == 1  # result_4 did not converge either: 2 of 5 failed
