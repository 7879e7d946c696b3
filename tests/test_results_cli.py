"""`hpcrepro collect` end to end: campaign folders, formats, exit codes, plot, package."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from results_helpers import rawify, research, run_cli  # noqa: F401

EOS_N8 = "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"


def make_campaign(research: Path, target: Path, published: float | None = 2.508,  # noqa: F811
                  org: str = "NVIDIA") -> Path:
    """A campaign folder as the campaign area writes it, with raw multi-rank logs."""
    (target / "logs").mkdir(parents=True)
    (target / "manifest.json").write_text(json.dumps({"runs": 5}))
    (target / "resolved-config.json").write_text(json.dumps({
        "system": "eos_n8", "version": "r4.0",
        "spec": {"ruleset": "4.0.0", "nodes": 8, "gpus_per_node": 8,
                 "implementation": "eos_n8_ngc24.04_mxnet",
                 "published": None if published is None else {"score_minutes": published}},
        "site": {"submission": {"org": org}},
    }))
    (target / "run.sub").write_text("#!/bin/bash\nsrun ./run_and_time.sh\n")
    (target / "logs" / "prep.log").write_text("dataset prep finished\n")
    for index, source in enumerate(sorted((research / EOS_N8).glob("result_*.txt"))):
        rawify(source, target / "logs" / f"run_{index}.log", ranks=2)
    return target


def test_campaign_table_score_rcp_and_published_ratio(research: Path, tmp_path: Path) -> None:  # noqa: F811
    campaign = make_campaign(research, tmp_path / "camp")
    code, out, err = run_cli("collect", str(campaign), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    summary = report["summary"]
    # No scaling.json in a campaign: our RCP check supplies NVIDIA's published factor.
    assert summary["scaling_source"] == "rcp"
    assert summary["scaling_factor"] == 1.0042232277526395
    assert summary["score_minutes"] == pytest.approx(2.516126, abs=1e-6)
    assert summary["rcp_pass"] is True
    assert summary["ratio_to_published"] == pytest.approx(2.516126 / 2.508, rel=1e-6)
    assert [r["status"] for r in report["runs"]] == ["success"] * 4 + ["aborted"]
    assert report["runs"][4]["reason"].startswith("never reached 0.759")
    assert any("prep.log" in s for s in summary["skipped"])


@pytest.mark.parametrize("fmt", ["table", "csv", "md"])
def test_other_formats(research: Path, tmp_path: Path, fmt: str) -> None:  # noqa: F811
    code, out, err = run_cli("collect", str(research / EOS_N8), "--format", fmt,
                             "--published", "2.5", "--no-official-check")
    assert code == 0, err
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert len(rows) == 5 and rows[4]["compliance"] == "FAIL"
        assert float(rows[0]["minutes"]) == 2.5054333333333334
    else:
        assert "2.5161" in out and "ratio 1.006" in out
        assert "result_4.txt" in out


def test_no_valid_score_exits_1_with_the_reason(research: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "logs"
    shutil.copytree(research / EOS_N8, folder)
    text = (folder / "result_0.txt").read_text()
    (folder / "result_0.txt").write_text(text[: len(text) // 2])  # killed mid-run
    code, _out, err = run_cli("collect", str(folder), "--version", "r4.0")
    assert code == 1
    assert "2 of 5 runs failed" in err


@pytest.mark.parametrize("args, message", [
    (["/does/not/exist"], "no such folder"),
    (["{empty}"], "no run logs found"),
    (["{eos}", "--version", "r4.1"], "has no ResNet-50 rules"),
    (["{eos}", "--version", "banana"], "is not an MLPerf Training version"),
    (["{eos}", "--format", "xml"], "unknown format"),
    (["{nvidia}", "--version", "r4.0"], "result sets"),
])
def test_user_errors_exit_2_without_traceback(research: Path, tmp_path: Path, args: list[str],  # noqa: F811
                                              message: str) -> None:
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", eos=research / EOS_N8,
                     nvidia=research / "v4.0/NVIDIA") for a in args]
    code, _out, err = run_cli("collect", *args)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_plot_png(research: Path, tmp_path: Path) -> None:  # noqa: F811
    import matplotlib.image as mpimg

    png = tmp_path / "out" / "plot.png"
    code, _out, err = run_cli("collect", str(research / EOS_N8), "--plot", str(png),
                              "--published", "2.5", "--no-official-check")
    assert code == 0, err
    image = mpimg.imread(png)
    height, width = image.shape[:2]
    assert (width, height) == (1300, 500)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert (image[..., :3] < 0.5).mean() > 0.005  # there are dark strokes: axes, text, curves


def test_package_passes_mlperf_loggings_package_checker(research: Path, tmp_path: Path) -> None:  # noqa: F811
    campaign = make_campaign(research, tmp_path / "camp")
    tree = tmp_path / "submission"
    code, _out, err = run_cli("collect", str(campaign), "--package", str(tree))
    assert code == 0, err
    results = tree / "results" / "eos_n8" / "resnet"
    assert sorted(p.name for p in results.iterdir()) == [
        "result_0.txt", "result_1.txt", "result_2.txt", "result_3.txt", "result_4.txt",
        "scaling.json"]
    assert all(line.startswith(":::MLLOG ")
               for line in (results / "result_0.txt").read_text().splitlines())
    system = json.loads((tree / "systems" / "eos_n8.json").read_text())
    assert system["number_of_nodes"] == "8" and system["status"] == "Available on-premise"
    implementation = tree / "benchmarks" / "resnet" / "implementations" / "eos_n8_ngc24.04_mxnet"
    assert (implementation / "run.sub").is_file()
    assert "system fields to fill in" in err
    assert "mlperf-logging's package checker: no errors" in err  # collect ran it itself
    log = tmp_path / "package_checker.log"
    subprocess.run([sys.executable, "-m", "mlperf_logging.package_checker", str(tree), "training",
                    "4.0.0", "--log_output", str(log)], cwd=tmp_path, capture_output=True,
                   check=False)
    text = log.read_text()
    assert "PACKAGE CHECKER FOUND NO ERRORS, SUCCESS" in text, text[-3000:]
    # The tree scores exactly as the campaign did (summarizer semantics on the written files).
    code, out, err = run_cli("collect", str(results), "--version", "r4.0", "--format", "json",
                             "--scaling", "folder", "--no-official-check")
    campaign_code, campaign_out, _ = run_cli("collect", str(campaign), "--format", "json",
                                             "--no-official-check")
    assert code == campaign_code == 0, err
    assert (json.loads(out)["summary"]["score_minutes"]
            == json.loads(campaign_out)["summary"]["score_minutes"])


def test_package_names_who_the_logs_name(research: Path, tmp_path: Path) -> None:  # noqa: F811
    """mlperf-common logs the site's submission.org; a package under another name than the logs
    carry would fail the package checker, so it is refused before anything is written."""
    campaign = make_campaign(research, tmp_path / "camp", org="Example HPC Centre")
    tree = tmp_path / "submission"
    code, _out, err = run_cli("collect", str(campaign), "--package", str(tree))
    assert code == 2 and "the runs' logs name 'NVIDIA' as submitter" in err, err
    assert "submission.org is 'Example HPC Centre'" in err and not tree.exists()


def test_more_than_five_runs_score_the_median_window(research: Path, tmp_path: Path) -> None:  # noqa: F811
    from hpcrepro.results.score import olympic_average

    campaign = make_campaign(research, tmp_path / "camp", published=None)
    logs = sorted((campaign / "logs").glob("run_*.log"))
    shutil.copy(logs[0], campaign / "logs" / "run_5.log")
    shutil.copy(logs[1], campaign / "logs" / "run_6.log")
    code, out, err = run_cli("collect", str(campaign), "--format", "json", "--system", "eos_n8",
                             "--no-official-check", "--scaling", "folder")
    assert code == 0, err
    report = json.loads(out)
    minutes = [r["minutes"] for r in report["runs"]]
    assert len(minutes) == 7
    windows = sorted((olympic_average([m for m in minutes[i:i + 5] if m != minutes[4]], 1), i)
                     for i in range(3))
    median_score, first = windows[1]
    assert report["summary"]["score_minutes"] == median_score
    note = next(n for n in report["summary"]["notes"] if "window of 5" in n)
    assert f"run_{first}.log" in note and f"run_{first + 4}.log" in note


def test_damaged_log_is_reported_with_file_and_line(research: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "logs"
    shutil.copytree(research / EOS_N8, folder)
    lines = (folder / "result_2.txt").read_text().splitlines()
    lines[30] = lines[30][:50]  # a truncated record
    (folder / "result_2.txt").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli("collect", str(folder), "--version", "r4.0", "--format", "json")
    assert code == 1 and "2 of 5 runs failed" in err  # result_4 never converged, result_2 broken
    report = json.loads(out)
    assert report["runs"][2]["reason"].startswith("unreadable MLLOG record at line 31")
    assert report["runs"][2]["compliance"] == "FAIL"
    assert any(p.startswith(f"{folder / 'result_2.txt'}:31: invalid MLLOG JSON")
               for p in report["summary"]["problems"])


def test_campaign_void_runs_are_listed_but_not_scored(research: Path, tmp_path: Path) -> None:  # noqa: F811
    """After `resume`, a killed run's log stays beside its replacement: the campaign manifest
    judged it void, so collect lists it and scores the 5 counted runs only."""
    campaign = make_campaign(research, tmp_path / "camp")
    logs = campaign / "logs"
    for index, log in enumerate(sorted(logs.glob("run_*.log")), start=1):
        log.rename(logs / f"run-{index:02d}.log")
    killed = (logs / "run-02.log").read_text().splitlines()
    (logs / "run-06.log").write_text("\n".join(killed[: len(killed) // 2]) + "\n")
    verdicts = {str(i): {"verdict": "valid", "reason": "reached"} for i in (1, 2, 3, 4, 5)}
    verdicts["6"] = {"verdict": "void", "reason": "job node_fail: void for time-to-train"}
    (campaign / "campaign.json").write_text(json.dumps({"stages": [
        {"name": f"run-{i:02d}", "kind": "train", "runs": [i],
         "verdicts": {str(i): verdicts[str(i)]}}
        for i in range(1, 7)
    ]}))
    code, out, err = run_cli("collect", str(campaign), "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    names = [Path(r["file"]).name for r in report["runs"]]
    assert names == [f"run-{i:02d}.log" for i in range(1, 6)]
    assert report["summary"]["score_minutes"] == pytest.approx(2.516126, abs=1e-6)
    assert any("run-06.log" in s and "void" in s for s in report["summary"]["skipped"])


def test_unreadable_and_dangling_logs_are_reported_not_fatal(research: Path,  # noqa: F811
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    shutil.copytree(research / EOS_N8, folder)
    (folder / "result_7.txt").symlink_to(tmp_path / "moved-away.txt")
    (folder / "result_8.txt").symlink_to(folder)  # a link to a folder: also a loop
    code, out, err = run_cli("collect", str(folder), "--version", "r4.0", "--format", "json",
                             "--no-official-check")
    assert code == 0, err
    report = json.loads(out)
    assert len(report["runs"]) == 5 and report["summary"]["score_minutes"] is not None
    skipped = report["summary"]["skipped"]
    assert any("result_7.txt" in s and "No such file" in s for s in skipped), skipped
    assert any("result_8.txt: a folder, not a log file" in s for s in skipped), skipped


def test_piped_table_keeps_each_run_on_one_line(research: Path, tmp_path: Path) -> None:  # noqa: F811
    """`collect ... | grep` finds every run: piped, the table neither folds nor cuts a path."""
    deep = tmp_path / ("a-rather-long-folder-name-on-a-parallel-filesystem" * 2) / "camp"
    campaign = make_campaign(research, deep)
    long_name = "run_0_of_a_campaign_whose_log_names_are_long_enough_to_wrap_a_table.log"
    (campaign / "logs" / "run_0.log").rename(campaign / "logs" / long_name)
    code, out, err = run_cli("collect", str(campaign))
    assert code == 0, err
    lines = out.splitlines()
    assert any(long_name in line for line in lines), out
    for index in range(1, 5):
        assert sum(f"run_{index}.log" in line for line in lines) == 1, out
    assert "…" not in out
