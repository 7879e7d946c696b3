"""`hpcrepro collect` on hostile folders and output paths: exit 2 or a skipped log, never a
traceback, a hang, a nonsense score or a clobbered file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mounts import small_filesystem, without_read_override
from results_helpers import research, run_cli  # noqa: F401

EOS_N8 = "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"
QUICK = ("--version", "r4.0", "--no-official-check")


@pytest.fixture
def logs(research: Path, tmp_path: Path) -> Path:  # noqa: F811
    folder = tmp_path / "logs"
    shutil.copytree(research / EOS_N8, folder)
    return folder


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def edit_time(log: Path, key: str, replacement: str) -> None:
    lines = log.read_text().splitlines()
    for index, line in enumerate(lines):
        if f'"key": "{key}"' in line:
            head, rest = line.split('"time_ms": ', 1)
            lines[index] = f'{head}"time_ms": {replacement}{rest[rest.index(","):]}'
    log.write_text("\n".join(lines) + "\n")


def test_markup_and_escapes_in_log_text_and_file_names_are_printed_inert(logs: Path) -> None:
    with open(logs / "result_0.txt", "a") as handle:
        handle.write(':::MLLOG {"key": "[/x]", broken\n')
        handle.write(':::MLLOG {"key": "\x1b[2J\x1b]0;owned\x07", broken\n')
    (logs / "result_4.txt").rename(logs / "result_[red]4.txt")
    code, out, err = run_cli("collect", str(logs), *QUICK)
    assert code == 1 and "Traceback" not in err, err
    assert "result_[red]4.txt" in out
    assert "[/x]" in out
    assert "\x1b" not in out + err and "\\x1b[2J" in out  # a log's escapes stay inert


def test_fifos_devices_and_folders_named_like_logs_are_skipped(logs: Path) -> None:
    os.mkfifo(logs / "fifo")
    (logs / "result_5.txt").symlink_to(logs / "fifo")
    (logs / "result_6.txt").symlink_to("/dev/zero")
    (logs / "result_7.txt").mkdir()
    code, out, err = run_cli("collect", str(logs), *QUICK, "--format", "json")
    assert code == 0, err
    report = strict_json(out)
    assert len(report["runs"]) == 5
    skipped = "\n".join(report["summary"]["skipped"])
    assert "result_5.txt: cannot read: a FIFO, not a regular file" in skipped
    assert "result_6.txt: cannot read: a device, not a regular file" in skipped
    assert "result_7.txt: a folder, not a log file" in skipped


def test_impossible_run_times_do_not_count(logs: Path) -> None:
    edit_time(logs / "result_0.txt", "run_start", "91714090291947")  # after its run_stop
    edit_time(logs / "result_1.txt", "run_stop", "Infinity")
    edit_time(logs / "result_2.txt", "eval_accuracy", "NaN")  # not a run time: harmless
    code, out, err = run_cli("collect", str(logs), *QUICK, "--format", "json")
    assert code == 1, err
    report = strict_json(out)
    runs = report["runs"]
    assert runs[0]["reason"] == ("run_stop (time_ms 1714090442273) is not after run_start "
                                 "(time_ms 91714090291947): no time to train")
    assert "is not a finite time" in runs[1]["reason"]
    assert [r["counts"] for r in runs] == [False, False, True, True, False]
    assert [r["minutes"] is None for r in runs] == [True, True, False, False, False]
    assert report["summary"]["score_minutes"] is None


def test_nan_accuracy_is_not_the_best(logs: Path) -> None:
    text = (logs / "result_0.txt").read_text()
    first = text.index('"key": "eval_accuracy", "value": ') + len('"key": "eval_accuracy", '
                                                                   '"value": ')
    end = text.index(",", first)
    (logs / "result_0.txt").write_text(text[:first] + "NaN" + text[end:])
    code, out, err = run_cli("collect", str(logs), *QUICK, "--format", "json")
    assert code == 0, err
    assert strict_json(out)["runs"][0]["best_accuracy"] == 0.76074


@pytest.mark.parametrize("factor", ["NaN", "-1", "0", "1e400"])
def test_nonsense_scaling_json_is_refused(logs: Path, factor: str) -> None:
    (logs / "scaling.json").write_text(f'{{"scaling_factor": {factor}}}')
    code, out, err = run_cli("collect", str(logs), *QUICK)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"{logs / 'scaling.json'} key 'scaling_factor'" in err
    assert "not a positive number" in err


@pytest.mark.parametrize("value", ["nan", "-5", "inf", "0"])
def test_nonsense_published_score_is_refused(logs: Path, value: str) -> None:
    code, _, err = run_cli("collect", str(logs), *QUICK, "--published", value)
    assert code == 2 and "--published" in err and "Traceback" not in err


def test_empty_version_and_a_file_for_the_folder_are_user_errors(logs: Path) -> None:
    code, _, err = run_cli("collect", str(logs), "--version", "")
    assert code == 2 and "'' is not an MLPerf Training version" in err
    code, _, err = run_cli("collect", str(logs / "result_0.txt"), *QUICK)
    assert code == 2 and "not a folder" in err


def test_utf16_logs_are_named_as_such(logs: Path) -> None:
    source = logs / "result_4.txt"
    source.write_bytes(source.read_text().encode("utf-16"))
    code, out, err = run_cli("collect", str(logs), *QUICK, "--format", "json")
    assert code == 1, err
    skipped = strict_json(out)["summary"]["skipped"]
    assert any("result_4.txt: UTF-16 text" in s and "iconv" in s for s in skipped), skipped


def test_unlistable_folders_are_reported(logs: Path, tmp_path: Path) -> None:
    hidden = logs / "more"
    hidden.mkdir()
    shutil.copy(logs / "result_4.txt", hidden / "result_9.txt")
    hidden.chmod(0)
    try:
        done = subprocess.run(
            [*without_read_override(), sys.executable, "-m", "hpcrepro", "collect", str(logs),
             *QUICK, "--format", "json"],
            capture_output=True, text=True, check=False, timeout=300)
    finally:
        hidden.chmod(0o755)
    assert done.returncode == 0, done.stderr
    report = strict_json(done.stdout)
    assert len(report["runs"]) == 5  # result_9.txt is out of sight
    skipped = report["summary"]["skipped"]
    assert any(s.startswith(f"{hidden}: cannot list this folder: Permission denied")
               for s in skipped), skipped


def test_plot_paths_are_checked_before_scoring(logs: Path, tmp_path: Path) -> None:
    (tmp_path / "adir.png").mkdir()
    (tmp_path / "afile").write_text("data")
    (tmp_path / "notes.png").write_text("precious")
    for target, message in [(tmp_path / "adir.png", "this is a folder"),
                            (tmp_path / "plot.jpg", "give it a .png name"),
                            (tmp_path / "afile" / "x.png", "is a file"),
                            (tmp_path / "notes.png", "not a PNG image: not overwritten")]:
        code, out, err = run_cli("collect", str(logs), *QUICK, "--plot", str(target))
        assert code == 2 and out == "", err
        assert message in err and "Traceback" not in err
    assert (tmp_path / "notes.png").read_text() == "precious"
    old_plot = tmp_path / "old.png"
    code, _, err = run_cli("collect", str(logs), *QUICK, "--plot", str(old_plot))
    assert code == 0, err
    first = old_plot.read_bytes()
    code, _, err = run_cli("collect", str(logs), *QUICK, "--plot", str(old_plot))
    assert code == 0 and old_plot.read_bytes() == first  # a plot is replaced by a plot


def test_package_never_overwrites_or_leaves_half_a_tree(logs: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("data")
    code, _, err = run_cli("collect", str(logs), *QUICK, "--package", str(tmp_path / "afile"))
    assert code == 2 and "this is a file, not a folder" in err
    mine = tmp_path / "pkg" / "systems" / "logs.json"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"mine": true}')
    code, _, err = run_cli("collect", str(logs), *QUICK, "--package", str(tmp_path / "pkg"))
    assert code == 2 and "already exists: not overwritten" in err, err
    assert mine.read_text() == '{"mine": true}'
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["systems"]
    (logs / "system.json").write_text("[1, 2]")
    code, _, err = run_cli("collect", str(logs), *QUICK, "--package", str(tmp_path / "pkg2"))
    assert code == 2 and f"{logs / 'system.json'}: holds a JSON list, not an object" in err
    (logs / "system.json").unlink()
    with small_filesystem(tmp_path / "small", "150k") as small:
        code, _, err = run_cli("collect", str(logs), *QUICK, "--package", str(small / "pkg"))
        assert code == 2 and "No space left on device" in err and "Traceback" not in err
        assert [p for p in (small / "pkg").rglob("*")] == []  # nothing half-written
