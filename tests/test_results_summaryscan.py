"""The summary scan yields what iter_records yields, and skips only what cannot change a result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcrepro.results import mllog
from hpcrepro.results.mllog import Problem, iter_records
from hpcrepro.results.runs import summarize_run
from hpcrepro.results.summaryscan import SummaryScan
from results_helpers import research  # noqa: F401

EOS_N8 = "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"


class _Every:
    def __contains__(self, key: object) -> bool:
        return True


def rec(key: str, value: object = None, time_ms: int = 1000, namespace: str = "",
        **metadata: object) -> str:
    return ":::MLLOG " + json.dumps({"namespace": namespace, "time_ms": time_ms,
                                     "event_type": "POINT_IN_TIME", "key": key, "value": value,
                                     "metadata": {"file": "x.py", "lineno": 1, **metadata}})


def hostile_log(path: Path) -> Path:
    """Every malformation at once, with rank copies around each so the copy cache is exercised."""
    lines: list[str] = [":::SYSJSON {\"a\": 1}", ":::DLPAL x 1 2"]
    for step in range(3):
        base = 1000 * step
        event = rec("eval_accuracy", 0.1 * step, base, epoch_num=step)
        lines += [f"{r}: " + event.replace(f'"time_ms": {base}', f'"time_ms": {base + r}')
                  for r in range(3)]
        lines += [f"[1,{r}]<stdout>:" + rec("init_start", None, base + 5 - r) for r in range(3)]
        lines += [rec("x", 1, base, namespace="ns"), rec("x", 1, base + 1, namespace="ns")]
    truncated = rec("run_start", None, 7)
    lines += [
        truncated, truncated[:50], "0: " + truncated.replace('"time_ms": 7', '"time_ms": 9'),
        rec("epoch_start", None, 8, epoch_num=1) + "0: " + rec("epoch_start", None, 9, epoch_num=1),
        "progress 10%\r0: " + rec("block_start", None, 10, first_epoch_num=1, epoch_count=1)
        + "\rprogress 20%\r1: " + rec("block_start", None, 11, first_epoch_num=1, epoch_count=1),
        ':::MLLOG {"time_ms": 12, "namespace": "", "key": "odd_order", "value": 1, "metadata": {}}',
        ':::MLLOG {"namespace": "", "time_ms": 013, "key": "leading_zero"}',
        ':::MLLOG {"namespace": "", "time_ms": 14, "event_type": "X", "key": "no_value", '
        '"metadata": {}}',
        ':::MLLOG {"namespace": "", "time_ms": 15, "event_type": "X", "key": "no_meta", '
        '"value": 1}',
        ":::MLLOG [1, 2]", ":::MLLOG ", "noise :::MLLOG {not json}",
        rec("submission_org", "Caf\xe9", 16), rec("submission_org", "Caf\xe9", 17),
        rec("run_stop", None, 20, status="success") + "  ",
        rec("run_stop", None, 21, status="success") + "  ",
    ]
    path.write_bytes(("\n".join(lines)).encode("latin-1"))  # no newline after the last line
    return path


def scan(path: Path, needed: object, copies: object) -> tuple[SummaryScan, list[mllog.Record],
                                                              list[Problem]]:
    problems: list[Problem] = []
    summary = SummaryScan(path, problems.append, needed=needed,  # type: ignore[arg-type]
                          copies_needed=copies)  # type: ignore[arg-type]
    return summary, list(summary), problems


@pytest.mark.parametrize("block_size", [mllog.BLOCK_SIZE, 64])
def test_scan_yields_every_record_and_problem_of_iter_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_size: int) -> None:
    monkeypatch.setattr(mllog, "BLOCK_SIZE", block_size)
    log = hostile_log(tmp_path / "hostile.log")
    expected_problems: list[Problem] = []
    expected = list(iter_records(log, expected_problems.append))
    summary, records, problems = scan(log, _Every(), _Every())
    fields = [(r.time_ms, r.key, r.value, r.metadata, r.official) for r in records]
    assert fields == [(r.time_ms, r.key, r.value, r.metadata, r.official) for r in expected]
    assert problems == expected_problems
    assert [p.line for p in problems] == [28, 30, 33, 34, 35, 36, 37, 38]
    assert summary.official == sum(r.official for r in expected)


def test_scan_counts_what_is_not_needed(tmp_path: Path) -> None:
    log = hostile_log(tmp_path / "hostile.log")
    expected = list(iter_records(log))
    summary, records, _ = scan(log, {"eval_accuracy", "init_start"}, {"init_start"})
    assert summary.official == sum(r.official for r in expected)
    assert {r.key for r in records} == {"eval_accuracy", "init_start"}
    assert not any(r.copy for r in records if r.key == "eval_accuracy")
    assert sum(r.key == "init_start" for r in records) == 9  # every copy of a needed key
    assert sum(r.key == "eval_accuracy" for r in records) == 3  # originals only


def test_an_earlier_rank_copy_of_init_start_is_not_skipped(research: Path,  # noqa: F811
                                                          tmp_path: Path) -> None:
    """A copy that moves `first_init_start` back 40 minutes breaks the 30-minute init limit; the
    copy guard must feed it, as the official checker reads it."""
    from mlperf_logging.compliance_checker import mlp_compliance

    lines = (research / EOS_N8 / "result_1.txt").read_text().splitlines()
    at = next(i for i, x in enumerate(lines) if '"init_start"' in x)
    time_ms = json.loads(lines[at].partition(":::MLLOG ")[2])["time_ms"]
    for minutes, valid in ((-40, False), (+1, True)):
        copy = lines[at].replace(f'"time_ms": {time_ms}',
                                 f'"time_ms": {time_ms + minutes * 60000}')
        log = tmp_path / f"copy{minutes}.txt"
        log.write_text("\n".join([*lines[: at + 1], copy, *lines[at + 1 :]]) + "\n")
        mlp_compliance.enqueued_configs.clear()
        checker = mlp_compliance.make_checker("training", "4.0.0", True, False)
        official, *_ = mlp_compliance.main(str(log), "training_4.0.0/common.yaml", checker)
        assert summarize_run(log, "4.0.0").compliance.valid is official is valid
