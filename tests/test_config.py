"""Layering system x version x site x --set, and the errors users get for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.config import resolve
from hpcrepro.errors import UserError

SITES = Path(__file__).parent / "data" / "sites"


def python_path() -> dict[str, str]:
    """Keep PYTHONPATH (a checkout run with PYTHONPATH=src) in a cleaned environment."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *args], capture_output=True, text=True, env=env
    )


def test_layers_system_site_and_overrides() -> None:
    cfg = resolve(
        "dgxa100_8x8",
        "r3.0",
        SITES / "pyxis.yaml",
        ["hparams.LR=9.5", "partition=debug", "env.EXTRA=1", "runs=3"],
    )
    assert cfg.spec.nodes == 8 and cfg.spec.global_batch == 8 * 8 * 51
    assert cfg.spec.hparams.EVAL_OFFSET == 2  # derived r3.0 A100 entry (NVIDIA's v2.1 value)
    assert cfg.spec.hparams.LR == 9.5
    assert cfg.site.partition == "debug" and cfg.site.account == "mlperf"
    assert cfg.site.env == {"NCCL_DEBUG": "WARN", "EXTRA": "1"}
    assert cfg.runs == 3
    assert cfg.origin_of("spec.hparams.LR") == "--set hparams.LR"
    assert cfg.origin_of("site.account").endswith("pyxis.yaml:3")
    assert cfg.origin_of("spec.nodes").startswith(
        "systems/dgxa100_8x8.yaml"
    ) or "dgxa100_8x8.yaml:" in cfg.origin_of("spec.nodes")
    assert cfg.origin_of("site.mpi") == "default"


def test_time_limit_counts_every_run() -> None:
    cfg = resolve("dgxh100_8x8", "r3.0", SITES / "pyxis.yaml")
    per_run, overhead = cfg.spec.minutes_per_run, cfg.spec.walltime_overhead_minutes
    assert cfg.time_limit_minutes(5) == int(5 * per_run + overhead + cfg.site.time_margin_minutes)
    assert cfg.time_limit_minutes(5) > cfg.time_limit_minutes(1)


def test_relative_site_paths_are_made_absolute(tmp_path: Path) -> None:
    site = tmp_path / "conf" / "site.yaml"
    site.parent.mkdir()
    site.write_text((SITES / "relative.yaml").read_text())
    cfg = resolve("dgxh100_1x8", "r4.0", site)
    assert cfg.site.dataset_dir == tmp_path / "conf" / "data"
    assert cfg.site.log_dir == tmp_path / "logs"


def test_site_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("runtime: none\ndataset_dir: /d\nlog_dir: /l\npartition: fromenv\n")
    monkeypatch.setenv("HPCREPRO_SITE", str(site))
    assert resolve("dgxh100_1x8", "r4.0").site.partition == "fromenv"


@pytest.mark.parametrize(
    ("site_text", "overrides", "expected"),
    [
        (
            "runtime: none\ndataset_dir: /d\nlog_dir: /l\npartiton: gpu\n",
            [],
            ["site.yaml:4", "unknown key", "partition"],
        ),
        (
            "runtime: none\ndataset_dir: /d\nlog_dir: /l\nexclusive: maybe\n",
            [],
            ["site.yaml:4", "exclusive"],
        ),
        ("runtime: none\ndataset_dir: data\nlog_dir: /l\n", ["dataset_dir="], ["dataset_dir"]),
        (
            "runtime: pyxis\ndataset_dir: /d\nlog_dir: /l\nworkload: reference\n",
            [],
            ["needs 'image'", "workload"],
        ),
        ("runtime: none\ndataset_dir: /d\nlog_dir: /l\npartition: 'a b'\n", [], ["#SBATCH"]),
        (
            "runtime: none\ndataset_dir: /d\nlog_dir: /l\n"
            "sbatch_args: ['--comment=nvcr.io#nvidia/mxnet']\n",
            [],
            ["#SBATCH", "registry URI"],
        ),
        (
            "runtime: none\ndataset_dir: /d\nlog_dir: /l\nenv: {'BAD-NAME': x}\n",
            [],
            ["BAD-NAME", "environment variable"],
        ),
        (
            "runtime: none\ndataset_dir: /d\nlog_dir: /l\n",
            ["hparams.LR=fast"],
            ["--set hparams.LR"],
        ),
        (
            "runtime: none\ndataset_dir: /d\nlog_dir: /l\n",
            ["nodez=2"],
            ["unknown key 'nodez'", "nodes"],
        ),
        (
            "runtime: none\ndataset_dir: /d\nlog_dir: /l\nruntime: pyxis\n",
            [],
            ["site.yaml:4", "given twice"],
        ),
        ("runtime: none\ndataset_dir: /d\n  log_dir: /l\n", [], ["site.yaml:", "invalid YAML"]),
        ("runtime: none\ndataset_dir: /d\nlog_dir: /l\n", ["hparams.LR=nan"],
         ["hparams.LR", "finite number"]),
        ("runtime: none\ndataset_dir: /d\nlog_dir: /l\n", ["hparams.WD=1e999"],
         ["hparams.WD", "finite number"]),
        ("runtime: none\ndataset_dir: /d\nlog_dir: /l\nenv: &e {A: *e}\n", [],
         ["site.yaml:4", "alias refers to the collection it is in"]),
        ("runtime: none\ndataset_dir: /d\nlog_dir: /l\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
         + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                   for p, n in zip("abcdef", "bcdefg", strict=True)), [],
         ["site.yaml:", "expands to more than 100000 values"]),
        ("runtime: none\ndataset_dir: /d\nlog_dir: /l\nmounts: ['relative:/x']\n", [], ["mount"]),
    ],
)
def test_bad_input_names_the_place_and_exits_2(
    tmp_path: Path, site_text: str, overrides: list[str], expected: list[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(site_text)
    args = ["config", "show", "--system", "dgxh100_1x8", "--version", "r4.0", "--site", str(site)]
    for override in overrides:
        args += ["--set", override]
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)


def test_unknown_system_and_version_list_close_matches() -> None:
    with pytest.raises(UserError) as error:
        resolve("dgxa100_8x9", "r3.0")
    assert "dgxa100_8x8" in str(error.value)
    with pytest.raises(UserError) as error:
        resolve("h200_1x8", "r2.1")
    assert "r4.0" in str(error.value)


def test_missing_site_says_how_to_give_one(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **python_path()}
    result = run_cli("config", "show", "--system", "dgxh100_1x8", "--version", "r4.0", env=env)
    assert result.returncode == 2
    assert "--site" in result.stderr and "dataset_dir" in result.stderr


def test_explain_shows_origins() -> None:
    result = run_cli(
        "config",
        "show",
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "--site",
        str(SITES / "pyxis.yaml"),
        "--set",
        "hparams.LR=9",
        "--explain",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert data["spec.hparams.LR"] == {"value": 9.0, "origin": "--set hparams.LR"}
    assert "pyxis.yaml:2" in data["site.partition"]["origin"]
    assert data["spec.global_batch"]["origin"] == "derived"
    assert "dgxa100_8x8.yaml" in data["spec.hparams.EVAL_OFFSET"]["origin"]
