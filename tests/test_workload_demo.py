"""`hpcrepro demo`: its system entry is a valid catalog entry; end to end it trains and collects."""

from __future__ import annotations

import json
import os
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
