"""Damaged and hostile logs: nothing crashes, and the verdict is still mlperf-logging's.

The mutations are seeded, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import pytest

from hpcrepro.results.mllog import Problem, iter_records
from hpcrepro.results.runs import progress, summarize_run
from hpcrepro.results.summaryscan import SummaryScan
from results_helpers import rawify, research  # noqa: F401

SOURCES = {  # one NVIDIA log per ruleset
    "2.1.0": "v2.1/NVIDIA/dgxa100_n8_ngc22.04_mxnet/result_0.txt",
    "3.0.0": "v3.0/NVIDIA/dgxh100_ngc23.04_mxnet/result_1.txt",
    "4.0.0": "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet/result_1.txt",
}
# Bytes that real damage and hostile writers put into logs.
PIECES = [
    b":::MLLOG ", b":::MLLOG :::MLLOG ", b"{", b"}", b"[", b"]", b'"', b"\r", b"\n", b"\x00",
    b"\xff", b"\x0b", b"\x1c", b"\t", b"0: ", b", ", b"null", b"NaN", b"-Infinity", b"1e999",
    b"\\u0000", b"\\ud800", b"9" * 5000, b"[" * 3000, b'{"a": ' * 1500,
    b'"time_ms": ', b'"time_ms": ' + b"9" * 400, b'"time_ms": 1e400', b'"time_ms": "x"',
    b'"time_ms": null', b'"key": 5', b'"key": ["a"]', b'"key": "run_stop"', b'"metadata": 7',
    b'"metadata": {}', b'"value": 12345678901234567890123', b'"epoch_num": "x"',
    b'"epoch_num": 1e999', b'"status": 5', b'"tensor": []',
]


class _Every:
    def __contains__(self, key: object) -> bool:
        return True


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few insertions, deletions, flipped bytes and repeated lines at random places."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(out) + 1)
        choice = rng.random()
        if choice < 0.5:
            out[at:at] = rng.choice(PIECES)
        elif choice < 0.7:
            del out[at : at + rng.randint(1, 50)]
        elif choice < 0.85 and at < len(out):
            out[at] = rng.randrange(256)
        else:
            end = out.find(b"\n", at)
            if end != -1:
                start = out.rfind(b"\n", 0, at) + 1
                out[start:start] = out[start : end + 1] * rng.randint(1, 3)
    return bytes(out)


def official_verdict(path: Path, ruleset: str) -> tuple[bool | None, str | None]:
    """(valid, None), or (None, the exception) when mlperf-logging's checker crashes."""
    from mlperf_logging.compliance_checker import mlp_compliance

    mlp_compliance.enqueued_configs.clear()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            checker = mlp_compliance.make_checker("training", ruleset, True, False)
            valid, *_ = mlp_compliance.main(str(path), f"training_{ruleset}/common.yaml", checker)
    except Exception as error:  # what we must predict, not hide
        return None, repr(error)
    return bool(valid), None


@pytest.mark.parametrize("ruleset", sorted(SOURCES))
def test_mutated_logs_never_crash_and_get_the_official_verdict(
        research: Path, tmp_path: Path, ruleset: str) -> None:  # noqa: F811
    rng = random.Random(f"hpcrepro-{ruleset}")
    raw = rawify(research / SOURCES[ruleset], tmp_path / "raw.txt", ranks=2).read_bytes()
    lines = raw.count(b"\n") + 1
    for case in range(30):
        log = tmp_path / f"mutant_{case}.txt"
        log.write_bytes(mutate(raw, rng))
        ours = summarize_run(log, ruleset)
        valid, crash = official_verdict(log, ruleset)
        where = (case, ours.compliance.messages[:3], crash)
        if crash is None:
            assert ours.compliance.official_crash is None, where
            assert ours.compliance.valid == valid, where
        else:
            assert ours.compliance.official_crash is not None, where
        assert all(0 < p.line <= lines + 20_000 for p in ours.problems), where
        expected_problems: list[Problem] = []
        expected = list(iter_records(log, expected_problems.append))
        problems: list[Problem] = []
        scan = SummaryScan(log, problems.append, needed=_Every(), copies_needed=_Every())
        assert [(r.time_ms, r.key, r.value, r.metadata) for r in scan] == \
            [(r.time_ms, r.key, r.value, r.metadata) for r in expected], case
        assert problems == expected_problems, case
        progress(log)  # the tail reader survives the same damage


def rec(time_ms: object = 1, key: str = "run_start", value: str = "null") -> str:
    return (f':::MLLOG {{"namespace": "", "time_ms": {time_ms}, "event_type": "POINT_IN_TIME", '
            f'"key": "{key}", "value": {value}, "metadata": {{}}}}')


@pytest.mark.parametrize(("line", "message", "crashes_official"), [
    (rec(value="[" * 5000 + "]" * 5000), "nested too deeply", True),
    (":::MLLOG " + "{" * 5 + "[" * 5000, "", False),  # invalid before it is deep
    (":::MLLOG " + "[" * 5000 + "]" * 5000, "nested too deeply", True),
    (rec(time_ms="9" * 400), "time_ms that is no number (an integer of about 400 digits)", True),
    (rec(time_ms="9" * 5000), "Exceeds the limit (4300 digits)", False),
    (rec(time_ms='"soon"'), "non-numeric time_ms 'soon'", False),
    (rec(time_ms="null"), "time_ms that is no number None", True),
])
def test_hostile_numbers_and_nesting_are_reported_not_raised(
        tmp_path: Path, line: str, message: str, crashes_official: bool) -> None:
    log = tmp_path / "result_0.txt"
    log.write_text(rec(1) + "\n" + line + "\n" + rec(2) + "\n")
    result = summarize_run(log, "4.0.0")
    assert [p.line for p in result.problems] == [2]
    assert message in result.problems[0].message
    assert "set_int_max_str_digits" not in result.problems[0].message
    assert result.problems[0].official_crash is crashes_official
    assert (result.compliance.official_crash is not None) is crashes_official
    _, crash = official_verdict(log, "4.0.0")
    assert (crash is not None) is crashes_official
    assert [r.key for r in iter_records(log)] == ["run_start", "run_start"]


def test_integers_beyond_64_bits_decode_as_json_does(tmp_path: Path) -> None:
    """orjson would make 12345678901234567890123 a float; the official parser keeps an int."""
    big = 12345678901234567890123
    log = tmp_path / "result_0.txt"
    log.write_text("\n".join([rec(1, "seed", str(big)), rec(2, "global_batch_size", str(big))])
                   + "\n")
    result = summarize_run(log, "4.0.0")
    assert result.seeds == [big] and type(result.seeds[0]) is int
    assert result.global_batch_size == big
    assert json.loads(str(big)) == result.seeds[0]
