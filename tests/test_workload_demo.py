"""`hpcrepro demo`: its system entry is a valid catalog entry; end to end it trains and collects."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpcrepro.errors import UserError
from hpcrepro.workload import demo

SRC = str(Path(__file__).resolve().parents[1] / "src")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    return env


def test_demo_system_is_a_valid_catalog_entry_with_the_tiny_recipe():
    catalog = pytest.importorskip("hpcrepro.catalog")
    entry = catalog.SystemEntry.model_validate(yaml.safe_load(demo.SYSTEM_YAML))
    version = entry.versions[demo.VERSION]
    assert entry.system == demo.SYSTEM
    assert version.env["HPCREPRO_WORKLOAD_PROFILE"] == "tiny"
    assert (version.nodes, version.gpus_per_node, version.ruleset) == (1, 1, "4.0.0")


def test_a_missing_cli_command_is_reported_by_name():
    with pytest.raises(UserError, match="'no-such-step' needs `hpcrepro no-such-command-hpcrepro`"):
        demo._hpcrepro(["no-such-command-hpcrepro"], cli_env(), "no-such-step")


def test_a_failing_step_shows_its_command_and_output(tmp_path):
    with pytest.raises(UserError, match="demo step 'prep' failed") as caught:
        demo._hpcrepro(
            ["prep", "imagenet", "--raw", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")],
            cli_env(),
            "prep",
        )
    assert "nothing" in caught.value.message


@pytest.mark.slow
def test_demo_runs_five_tiny_trainings_and_prints_the_collected_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hpcrepro", "demo", "--dir", str(tmp_path), "--runs", "5"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "hpcrepro collect" in result.stdout and "done" in result.stdout
    stops = []
    for log in (tmp_path / "campaigns").rglob("*"):
        if log.is_file() and log.suffix in (".log", ".txt", ".out"):
            for line in log.read_text(errors="replace").splitlines():
                if ":::MLLOG " in line and '"run_stop"' in line:
                    stops.append(json.loads(line.split(":::MLLOG ", 1)[1])["metadata"]["status"])
    # Each run's log holds one run_stop (collected copies may repeat them): 5 runs, all converged.
    assert len(stops) >= 5 and set(stops) == {"success"}


def test_runs_are_bounded_like_submit_before_anything_is_written(tmp_path):
    site = pytest.importorskip("hpcrepro.site")
    assert demo.MAX_RUNS == site.MAX_RUNS
    with pytest.raises(UserError, match="--runs 100 is out of range"):
        demo.run_demo(tmp_path / "d", 100, say=lambda text: None)
    result = subprocess.run(
        [sys.executable, "-m", "hpcrepro", "demo", "--dir", str(tmp_path / "d"), "--runs", "100"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "1<=x<=99" in result.stderr
    assert not (tmp_path / "d").exists()


def test_a_demo_folder_that_is_a_file_is_refused_by_path(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(
        UserError, match=re.escape(f"cannot use {afile} as the demo folder: it is not a folder")
    ):
        demo.run_demo(afile, 1, say=lambda text: None)
    with pytest.raises(
        UserError, match=re.escape(f"cannot create the demo folder {afile}/sub/systems: Not a")
    ):
        demo.run_demo(afile / "sub", 1, say=lambda text: None)


def test_a_site_yaml_the_demo_did_not_write_is_never_replaced(tmp_path):
    (tmp_path / "site.yaml").write_text("partition: my-precious-site\n")
    with pytest.raises(
        UserError, match=r"site\.yaml exists and was not written by the demo"
    ) as caught:
        demo.run_demo(tmp_path, 1, say=lambda text: None)
    assert "choose another --dir" in (caught.value.hint or "")
    assert (tmp_path / "site.yaml").read_text() == "partition: my-precious-site\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["site.yaml"]
    # The demo's own files start with its marker line, so a second run may rewrite them.
    assert demo.SYSTEM_YAML.startswith(demo.WRITTEN_BY)
    assert demo.SITE_YAML.startswith(demo.WRITTEN_BY)


def test_an_interrupted_generation_leaves_no_raw_folder_and_is_redone(tmp_path, monkeypatch):
    synthetic = pytest.importorskip("hpcrepro.workload.synthetic")
    real = synthetic.write_synthetic_imagenet

    def interrupted(root, **kwargs):
        real(root, num_classes=2, train_per_class=1, val_per_class=1)
        raise KeyboardInterrupt  # Ctrl-C half way through

    monkeypatch.setattr(synthetic, "write_synthetic_imagenet", interrupted)
    raw = tmp_path / "raw"
    with pytest.raises(KeyboardInterrupt):
        demo._ensure_raw(raw, print)
    assert list(tmp_path.iterdir()) == []
    # A kill -9 leaves the hidden half behind: the next run removes it and writes a whole set.
    (tmp_path / f"{demo.RAW_PARTIAL_PREFIX}1234" / "train").mkdir(parents=True)
    monkeypatch.setattr(synthetic, "write_synthetic_imagenet", real)
    demo._ensure_raw(raw, print)
    assert [path.name for path in tmp_path.iterdir()] == ["raw"]
    assert (raw / demo.RAW_COMPLETE).is_file()
    assert len(list((raw / "val").rglob("*.JPEG"))) == 200


def test_a_raw_folder_the_demo_did_not_finish_says_to_delete_it(tmp_path):
    (tmp_path / "raw" / "val").mkdir(parents=True)
    with pytest.raises(UserError, match="did not finish writing it") as caught:
        demo._ensure_raw(tmp_path / "raw", print)
    assert f"delete {tmp_path / 'raw'}" in (caught.value.hint or "")
