"""The streaming MLLOG reader against every malformation real logs contain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcrepro.results import mllog
from hpcrepro.results.mllog import Problem, iter_records
from hpcrepro.results.runs import progress, summarize_run
from results_helpers import rawify, research  # noqa: F401

EOS_N8 = "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"


def rec(key: str, value: object = None, time_ms: int = 1000, **metadata: object) -> str:
    return ":::MLLOG " + json.dumps({"namespace": "", "time_ms": time_ms,
                                     "event_type": "POINT_IN_TIME", "key": key, "value": value,
                                     "metadata": {"file": "x.py", "lineno": 1, **metadata}})


def read(path: Path) -> tuple[list[mllog.Record], list[Problem]]:
    problems: list[Problem] = []
    return list(iter_records(path, problems.append)), problems


def official_view(path: Path) -> tuple[list[tuple[str, float]], int]:
    from mlperf_logging.compliance_checker.mlp_parser import parse_file

    lines, errors = parse_file(str(path), ruleset="4.0.0")
    return [(ll.key, ll.timestamp) for ll in lines], len(errors)


def test_prefixes_noise_and_sysjson_are_handled(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("\n".join([
        ':::SYSJSON {"submitter": "NVIDIA"}', ":::DLPAL x 1", "plain noise",
        "0: " + rec("run_start", time_ms=1), "[1,0]<stdout>:" + rec("eval_accuracy", 0.5, 2,
                                                                     epoch_num=1),
        ":::MLLOG{\"not\": \"a record\"}",
    ]) + "\n")
    records, problems = read(log)
    assert [r.key for r in records] == ["run_start", "eval_accuracy"]
    assert [r.line for r in records] == [4, 5]
    assert problems == []
    assert official_view(log) == ([("run_start", 1.0), ("eval_accuracy", 2.0)], 0)


def test_two_records_on_one_line_are_both_recovered_and_reported(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("x\n0: " + rec("init_start", time_ms=5) + "1: " + rec("init_start", time_ms=6)
                   + "\n")
    records, problems = read(log)
    assert [(r.key, r.time_ms, r.official) for r in records] == [
        ("init_start", 5.0, False), ("init_start", 6.0, True)]
    assert problems[0].line == 2 and "2 MLLOG records on one line" in problems[0].message
    assert official_view(log) == ([("init_start", 6.0)], 0)


def test_truncated_and_invalid_json_are_reported_with_line(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    good = rec("run_start")
    log.write_text("\n".join([good, good[:60], ":::MLLOG {not json}", good]) + "\n")
    records, problems = read(log)
    assert len(records) == 2
    assert [(p.line, p.official_parse_error) for p in problems] == [(2, True), (3, True)]
    assert all(str(p).startswith(f"{log}:") for p in problems)
    assert official_view(log)[1] == 2


def test_missing_value_or_metadata_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text('\n'.join([
        ':::MLLOG {"namespace": "", "time_ms": 1, "event_type": "X", "key": "a", "metadata": {}}',
        ':::MLLOG {"namespace": "", "time_ms": 1, "event_type": "X", "key": "b", "value": 1}',
        ':::MLLOG [1, 2]', ':::MLLOG {"time_ms": "1.2.3", "key": "c", "value": 1, "metadata": {}}',
    ]) + "\n")
    records, problems = read(log)
    assert records == []
    assert ["'value'" in problems[0].message, "'metadata'" in problems[1].message] == [True, True]
    assert "not an object" in problems[2].message and "time_ms" in problems[3].message
    with pytest.raises(KeyError):  # what mlperf-logging does with the same file
        official_view(log)


def test_latin1_bytes_and_carriage_returns(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    payload = rec("submission_org", "Caf\u00e9")
    log.write_bytes(b"progress 10%\rprogress 90%\r" + payload.encode("latin-1") + b"\r\n"
                    + b"\xff\xfe garbage\n" + rec("run_stop", None, status="success").encode())
    records, problems = read(log)
    assert [r.key for r in records] == ["submission_org", "run_stop"]
    assert records[0].value == "Caf\u00e9" and problems == []
    assert [k for k, _ in official_view(log)[0]] == ["submission_org", "run_stop"]


def test_block_boundaries_and_lines_longer_than_a_block(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mllog, "BLOCK_SIZE", 64)
    lines = ["noise " * 40, *[f"{i % 3}: " + rec("eval_accuracy", 0.1 * i, i, epoch_num=i)
                              for i in range(1, 8)], "z" * 500, rec("run_stop", status="x")]
    log = tmp_path / "a.log"
    log.write_text("\n".join(lines))  # no newline at the end of the last line
    records, problems = read(log)
    assert [r.key for r in records] == ["eval_accuracy"] * 7 + ["run_stop"]
    assert [r.line for r in records] == [2, 3, 4, 5, 6, 7, 8, 10]
    assert problems == []


def test_lines_longer_than_max_line_are_not_kept_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed node can leave gigabytes of NUL bytes without a line break: the reader keeps at
    most MAX_LINE bytes of a line, still finds a short record at its end, reports a record longer
    than MAX_LINE with its line, and goes on with the right line numbers."""
    monkeypatch.setattr(mllog, "BLOCK_SIZE", 256)
    monkeypatch.setattr(mllog, "MAX_LINE", 4096)
    giant_record = rec("eval_accuracy", "y" * 9000, 5, epoch_num=1)
    log = tmp_path / "padded.log"
    log.write_bytes("\n".join([
        rec("init_start", None, 1),
        "\0" * 20_000 + rec("eval_accuracy", 0.5, 2, epoch_num=1),  # garbage, then a record
        giant_record,
        rec("run_stop", None, 9, status="success"),
        "\0" * 30_000,  # padding up to the end of the file
    ]).encode())
    kept: list[int] = []
    real_long_line = mllog.BlockReader._long_line

    def spy(self: mllog.BlockReader, buf: bytes) -> tuple[bytes, bool]:
        carry, skipping = real_long_line(self, buf)
        kept.append(len(carry))
        return carry, skipping

    monkeypatch.setattr(mllog.BlockReader, "_long_line", spy)
    records, problems = read(log)
    assert [(r.key, r.line) for r in records] == [("init_start", 1), ("eval_accuracy", 2),
                                                  ("run_stop", 4)]
    assert [(p.line, p.official_parse_error) for p in problems] == [(3, True)]
    assert "longer than" in problems[0].message
    assert kept and max(kept) <= 4096
    result = summarize_run(log, "4.0.0")
    assert result.run_stop and result.best_accuracy == 0.5
    assert [(p.line, p.message) for p in result.problems] == [(p.line, p.message)
                                                              for p in problems]


def test_a_log_of_damaged_records_keeps_the_first_problems_and_counts_all(
        tmp_path: Path) -> None:
    """Millions of damaged records must not fill memory: the first problems are kept with their
    lines, all are counted, and the count still reaches the compliance verdict and the reason."""
    from hpcrepro.results import runs

    log = tmp_path / "garbage.log"
    damaged = runs.KEPT_PROBLEMS * 3
    log.write_text("".join(rec("eval_accuracy", 0.5, i, epoch_num=1)[:-30] + "\n"
                           for i in range(damaged)))
    result = summarize_run(log, "4.0.0")
    assert len(result.problems) == runs.KEPT_PROBLEMS
    assert result.problem_count == result.unreadable_count == damaged
    assert [p.line for p in result.problems[:3]] == [1, 2, 3]
    assert f"Log lines had parsing errors ({damaged})." in result.compliance.messages
    assert not result.valid


def test_raw_multi_rank_log_scores_like_the_clean_file(research: Path, tmp_path: Path) -> None:  # noqa: F811
    clean = research / EOS_N8 / "result_0.txt"
    raw = rawify(clean, tmp_path / "raw.log", ranks=4)
    a, b = summarize_run(clean, "4.0.0"), summarize_run(raw, "4.0.0")  # EOS_N8 is a v4.0 log
    assert b.time_to_train_minutes == a.time_to_train_minutes == 2.5054333333333334
    assert b.epochs_to_target == a.epochs_to_target == 35
    assert b.compliance.valid and b.status == "success" and b.best_accuracy == a.best_accuracy


def test_rule_engine_agrees_with_the_official_checker_on_damaged_logs(
        research: Path, tmp_path: Path) -> None:  # noqa: F811
    from mlperf_logging.compliance_checker import mlp_compliance

    lines = (research / EOS_N8 / "result_1.txt").read_text().splitlines()
    cases = {
        "truncated": lines[: len(lines) // 2],
        "bad_json": [*lines[:40], lines[40][:70], *lines[41:]],
        "no_run_start": [x for x in lines if '"run_start"' not in x],
        "run_start_twice": [*lines, next(x for x in lines if '"run_start"' in x)],
        "bad_decay": [x.replace('"lars_opt_end_learning_rate", "value": 0.0001',
                                '"lars_opt_end_learning_rate", "value": 0.001') for x in lines],
        "merged_line": [lines[0] + "0: " + lines[1], *lines[2:]],
        "intact": lines,
    }
    for name, content in cases.items():
        log = tmp_path / f"{name}.txt"
        log.write_text("\n".join(content) + "\n")
        mlp_compliance.enqueued_configs.clear()
        checker = mlp_compliance.make_checker("training", "4.0.0", True, False)
        official, *_ = mlp_compliance.main(str(log), "training_4.0.0/common.yaml", checker)
        ours = summarize_run(log, "4.0.0")
        assert ours.compliance.valid == official, (name, ours.compliance.messages)
    assert official is True  # the intact copy passes


def test_progress_reads_the_tail_of_a_growing_log(tmp_path: Path) -> None:
    log = tmp_path / "grow.log"
    log.write_text("starting\n")
    assert progress(log) == (None, None, "not started")
    with open(log, "a") as handle:
        handle.write(rec("init_start") + "\n" + rec("run_start") + "\n")
        handle.write("noise line\n" * 50_000)
        handle.write(rec("eval_accuracy", 0.61, epoch_num=12) + "\n")
        handle.write(rec("epoch_start", epoch_num=13) + "\n" + "0: half a line")
    assert progress(log) == (13.0, 0.61, "running")
    with open(log, "a") as handle:
        handle.write("\n" + rec("run_stop", status="aborted") + "\n")
    assert progress(log)[2] == "aborted"


def test_rank_copies_are_recognised_and_change_no_verdict(research: Path, tmp_path: Path) -> None:  # noqa: F811
    """Every rank's copy of a record is recognised without decoding; where copies matter (2.1.0
    wants each initialized tensor logged once) the verdict still equals mlperf-logging's."""
    from mlperf_logging.compliance_checker import mlp_compliance

    source = research / "v2.1/NVIDIA/dgxa100_n8_ngc22.04_mxnet/result_0.txt"
    raw = rawify(source, tmp_path / "raw.log", ranks=3)
    records = list(iter_records(raw))
    assert len(records) == 3 * len(list(iter_records(source)))
    assert sum(r.copy for r in records) >= 2 * len(records) // 3
    for path in (source, raw):
        mlp_compliance.enqueued_configs.clear()
        checker = mlp_compliance.make_checker("training", "2.1.0", True, False)
        official, *_ = mlp_compliance.main(str(path), "training_2.1.0/common.yaml", checker)
        assert summarize_run(path, "2.1.0").compliance.valid == official
    assert summarize_run(source, "2.1.0").compliance.valid
    assert not summarize_run(raw, "2.1.0").compliance.valid  # weights_initialization repeated
