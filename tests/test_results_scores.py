"""Scores of the real MLPerf logs: published values, mlperf-logging's summarizer, RCP vectors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hpcrepro.results import rcp
from hpcrepro.results.compliance import check_logs
from hpcrepro.results.runs import summarize_run
from hpcrepro.results.score import olympic_average, read_scaling_json, score_runs
from results_helpers import DATA, published_rows, research, ruleset_of  # noqa: F401
from results_summarizer_table import summarizer_result


def _folder(root: Path, row: dict[str, str]) -> Path:
    return root / row["version"] / row["submitter"] / row["system"]


def _runs(folder: Path, ruleset: str) -> list:
    from hpcrepro.results.inputs import find_logs

    return [summarize_run(p, ruleset) for p in find_logs(folder)]


@pytest.fixture(scope="module")
def scored(research: Path) -> dict[str, tuple]:  # noqa: F811
    """Every stored directory scored by hpcrepro, summarizer semantics (scaling.json or 1.0)."""
    out = {}
    for row in published_rows(research):
        folder = _folder(research, row)
        runs = _runs(folder, ruleset_of(row["version"]))
        score = score_runs(runs, ruleset_of(row["version"]), read_scaling_json(folder),
                           use_rcp_factor=False)
        out[folder.relative_to(research).as_posix()] = (row, runs, score)
    return out


def test_every_published_score_is_reproduced_exactly(scored: dict[str, tuple]) -> None:
    assert len(scored) == 74
    for name, (row, runs, score) in scored.items():
        assert score.minutes == float(row["score_minutes"]), name
        assert score.dropped == int(row["failed_runs"]), name
        expected = [float(x) if x else None for x in row["per_run_minutes"].split(";")]
        got = [r.time_to_train_minutes if r.valid else None for r in runs]
        assert got == expected, name
        failures = {x for x in row["compliance_failures"].split(";") if x}
        assert {Path(r.path).name for r in runs if not r.compliance.valid} == failures, name


def test_agrees_with_the_stored_summarizer_table(scored: dict[str, tuple]) -> None:
    """The table was produced by tests/results_summarizer_table.py (mlperf-logging's summarizer)."""
    with open(DATA / "summarizer_scores.csv", newline="") as handle:
        table = {row["directory"]: row for row in csv.DictReader(handle)}
    assert set(table) == set(scored)
    for name, (_row, runs, score) in scored.items():
        official = table[name]
        assert score.minutes == float(official["score_minutes"]), name
        minutes = json.loads(official["runs"])
        assert {Path(r.path).name: r.time_to_train_minutes for r in runs if r.valid} == minutes


@pytest.mark.slow
def test_agrees_with_the_live_summarizer_on_a_subset(research: Path) -> None:  # noqa: F811
    """Run mlperf-logging's summarizer now on directories with a failed run, a truncated log,
    the open division and a scaling.json, and compare."""
    subset = ["v4.0/NVIDIA/eos_n8_ngc24.04_mxnet",
              "v2.1/HPE/HPE-ProLiant-XL675d-Gen10-Plus_A100-SXM-80GB_16N_mxnet",
              "v3.1/Ailiverse/8xA100_40GB_open"]
    for name in subset:
        folder = research / name
        ruleset = ruleset_of(name.split("/")[0])
        official = summarizer_result(folder, ruleset)
        ours = score_runs(_runs(folder, ruleset), ruleset, read_scaling_json(folder),
                          use_rcp_factor=False)
        assert ours.minutes == official["score"], name


def test_rcp_scaling_matches_every_published_scaling_json(scored: dict[str, tuple]) -> None:
    """Published scaling.json files are test vectors for our RCP code. One known exception:
    v3.1 Supermicro-RedHat published 1.0096311 where the RCP data give 1.0095635 (also what
    mlperf-logging's own checker computes today)."""
    checked = 0
    for name, (row, runs, _score) in scored.items():
        published = read_scaling_json(Path(runs[0].path).parent)
        if published is None:
            continue
        ours = rcp.check([r.global_batch_size for r in runs], [r.epochs_to_target for r in runs],
                         ruleset_of(row["version"]))
        checked += 1
        if name.startswith("v3.1/Supermicro-RedHat/"):
            assert ours.scaling_factor == pytest.approx(1.0095635384138637, abs=1e-12)
            continue
        assert ours.passed, name
        assert ours.scaling_factor == published, name
    assert checked == 44  # every stored scaling.json


def test_rcp_thresholds_match_the_reference_tables() -> None:
    pruned = [r.batch_size for r in rcp.pruned_references("4.0.0")]
    assert pruned == [1632, 3264, 32768, 49152, 67840]
    eos_n8 = rcp.check([3200] * 5, [35, 35, 35, 35, None], "4.0.0")
    assert eos_n8.reference_mean == pytest.approx(35.148, abs=1e-3)
    assert eos_n8.min_mean_epochs == pytest.approx(34.248, abs=1e-3)
    assert eos_n8.scaling_factor == 1.0042232277526395
    too_fast = rcp.check([3200] * 5, [30, 30, 30, 30, 30], "4.0.0")
    assert not too_fast.passed and too_fast.scaling_factor == 1.0
    assert not rcp.check([3200] * 5, [35, 35, 35, None, None], "4.0.0").passed
    assert not rcp.check([3200, 3200, 3200, 3200, 1600], [35] * 5, "4.0.0").passed
    assert not rcp.check([80000] * 5, [90] * 5, "4.0.0").passed
    small = rcp.check([1600] * 5, [35] * 5, "4.0.0")
    assert small.passed and small.scaling_factor == 1.0


def test_olympic_average_matches_the_summarizer_slicing() -> None:
    assert olympic_average([5.0, 1.0, 3.0, 2.0, 4.0], 0) == 3.0
    assert olympic_average([1.0, 2.0, 3.0, 4.0], 1) == 3.0
    assert olympic_average([1.0], 1) is None


def test_official_checker_runs_as_a_subprocess_with_the_ruleset(research: Path) -> None:  # noqa: F811
    folder = research / "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"
    verdicts = check_logs([folder / "result_0.txt", folder / "result_4.txt"], "4.0.0")
    assert [v.valid for v in verdicts] == [True, False]
    assert "eval_accuracy" in verdicts[1].detail


def test_installed_mlperf_logging_is_recent_enough() -> None:
    from hpcrepro.results.compliance import MIN_VERSION, require_mlperf_logging

    found = tuple(int(p) for p in require_mlperf_logging().split(".")[:3])
    assert found >= MIN_VERSION
