"""Hostile and real-world site files and --set values: each gives a UserError naming the place.

Most cases call `resolve` in the test process (fast); a few run the CLI to check exit code 2 and
that no traceback or hang reaches the user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.config import ResolvedConfig, resolve
from hpcrepro.errors import UserError
from hpcrepro.render import render_training
from hpcrepro.site import image_is_file
from hpcrepro.yamlio import MAX_FILE_BYTES, parse_yaml
from script_checks import check_scripts

SYSTEM = ("dgxh100_1x8", "r4.0")
BASE = "runtime: pyxis\nimage: nvcr.io/nvidia/mxnet:23.04-py3\ndataset_dir: /d\nlog_dir: /l\n"


def site_error(tmp_path: Path, text: str, overrides: list[str] | None = None) -> UserError:
    site = tmp_path / "site.yaml"
    site.write_text(text)
    with pytest.raises(UserError) as error:
        resolve(*SYSTEM, site, overrides or [])
    return error.value


def resolved(tmp_path: Path, text: str, overrides: list[str] | None = None) -> ResolvedConfig:
    site = tmp_path / "site.yaml"
    site.write_text(text)
    return resolve(*SYSTEM, site, overrides or [])


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "overrides", "where", "fragments"),
    [
        # 1. nesting deep enough to exhaust PyYAML's recursive composer
        (BASE + "env: " + "[" * 500 + "]" * 500 + "\n", [], "site.yaml:5", ["nested too deeply"]),
        (BASE, ["srun_args=" + "[" * 600 + "]" * 600], "--set srun_args", ["nested too deeply"]),
        # aliases can stack nesting beyond what the composer sees
        (BASE + "a: &a " + "[" * 40 + "]" * 40 + "\nb: &b " + "[" * 40 + "*a" + "]" * 40 + "\n",
         [], "site.yaml:5", ["nested too deeply"]),
        # 2. the mapping form of mounts is checked like the string form
        (BASE + 'mounts:\n  - {source: /a, target: "/b,/etc:/host-etc"}\n', [],
         "site.yaml:6 key 'mounts.0.target'", ["absolute path without ','"]),
        (BASE + "mounts:\n  - {source: rel, target: /b}\n", [],
         "site.yaml:6 key 'mounts.0.source'", ["absolute"]),
        (BASE + "mounts:\n  - {source: /a, target: /b, options: ro}\n", [],
         "site.yaml:6 key 'mounts.0.options'", ["unknown key"]),
        (BASE + "mounts: ['/a:/b:rx']\n", [], "site.yaml:5 key 'mounts'", ["ro|rw"]),
        (BASE + "mounts: ['/a:/b,/c:/d']\n", [], "site.yaml:5 key 'mounts'", ["commas"]),
        # 3. a trailing line break must not pass a '^...$' check
        (BASE + 'env:\n  "A\\n": x\n', [], "site.yaml:6 key 'env.'A\\n''",
         ["not a valid environment variable name"]),
        (BASE + 'mpi: "pmix\\n"\n', [], "site.yaml:5 key 'mpi'", ["line break"]),
        (BASE + 'mounts: ["/a:/b\\n"]\n', [], "site.yaml:5 key 'mounts'", ["line break"]),
        (BASE + 'partition: "gpu\\n"\n', [], "site.yaml:5 key 'partition'", ["#SBATCH"]),
        # 4. NUL and other control characters in anything that reaches a script
        (BASE + 'env:\n  E: "a\\0b"\n', [], "site.yaml:6 key 'env.E'", ["NUL byte"]),
        (BASE + 'srun_args: ["--x\\0"]\n', [], "site.yaml:5 key 'srun_args'", ["NUL byte"]),
        (BASE + 'train_command: "python x.py\\rrm"\n', [], "site.yaml:5 key 'train_command'",
         ["line break"]),
        (BASE + 'env:\n  E: "a\\eb"\n', [], "site.yaml:6 key 'env.E'", ["control character"]),
        (BASE, ['env.E="a\\0b"'], "--set env.E", ["NUL byte"]),
        # 5. env values: no silent None, list or dict reprs, no binary
        (BASE + "env:\n  NCCL_DEBUG:\n", [], "site.yaml:6 key 'env.NCCL_DEBUG'",
         ['write "" for an empty string']),
        (BASE + "env:\n  NCCL_DEBUG: ~\n", [], "site.yaml:6 key 'env.NCCL_DEBUG'", ["no value"]),
        (BASE + "env:\n  A: [1, 2]\n", [], "site.yaml:6 key 'env.A'", ["not a list"]),
        (BASE + "env:\n  B: {b: c}\n", [], "site.yaml:6 key 'env.B'", ["not a mapping"]),
        (BASE + "env:\n  C: !!binary aGVsbG8=\n", [], "site.yaml:6 key 'env.C'", ["!!binary"]),
        (BASE, ["env.X=[1, 2]"], "--set env.X", ["not a list"]),
        # 6. the same bounds everywhere
        (BASE, ["runs=100"], "--set runs", ["99"]),
        (BASE, ["runs=0"], "--set runs", ["greater than or equal to 1"]),
        (BASE, ["nodes=100000000000000000000"], "--set nodes", ["65536"]),
        (BASE, ["gpus_per_node=1000"], "--set gpus_per_node", ["64"]),
        (BASE + "runs: 1000\n", [], "site.yaml:5 key 'runs'", ["99"]),
        # 8. paths that reach '#SBATCH --output=' are checked with their key
        (BASE.replace("log_dir: /l", 'log_dir: "/tmp/lo#gs"'), [], "site.yaml:4 key 'log_dir'",
         ["#SBATCH --output="]),
        (BASE.replace("log_dir: /l", 'log_dir: "/tmp/a\\\\b"'), [], "site.yaml:4 key 'log_dir'",
         ["#SBATCH --output="]),
        (BASE, ['log_dir=/tmp/a"b'], "--set log_dir", ["#SBATCH --output="]),
        (BASE.replace("log_dir: /l", 'log_dir: "/tmp/a\\nb"'), [], "site.yaml:4 key 'log_dir'",
         ["line break"]),
        # 9. clear messages
        (BASE + "env:\n  <<: 3\n", [], "site.yaml:6", ["'<<' merges mappings"]),
        (BASE + "1: x\n", [], "site.yaml:5 key '1'", ["unknown key"]),
        (BASE + "null: x\n", [], "site.yaml:5", ["a key is empty"]),
        (BASE + "a: !!python/object:os.system x\n", [], "site.yaml:5", ["cannot read this value"]),
        (BASE + 'partition: !!python/object/apply:os.system ["touch /tmp/x"]\n', [],
         "site.yaml:5", ["is not allowed"]),
        (BASE + "env:\n\tA: x\n", [], "site.yaml:6", ["spaces only"]),
        (BASE + "---\nx: 1\n", [], "site.yaml:5", ["one YAML document"]),
        (BASE.replace("log_dir: /l", "log_dir: /l,x"), [], "site.yaml:4 key 'log_dir'",
         ["container mount syntax"]),
        (BASE, ["dataset_dir=/d:x"], "--set dataset_dir", ["container mount syntax"]),
        (BASE.replace("image: nvcr.io/nvidia/mxnet:23.04-py3\n", "workload: reference\n"), [],
         "site.yaml:2 key 'workload'", ["workload 'reference' under runtime 'pyxis' needs"]),
        (BASE, ["image=", "workload=reference"], "--set workload", ["needs 'image'"]),
        # 10. numbers beyond any real value: bounded, never an OverflowError or MemoryError
        (BASE, ["hparams.NUMEPOCHS=99999999999999999999999"], "--set hparams.NUMEPOCHS",
         ["less than or equal to 1000"]),
        (BASE, ["hparams.NUMEPOCHS=999999999999"], "--set hparams.NUMEPOCHS", ["1000"]),
        (BASE, ["hparams.EVAL_PERIOD=99999999999999999999"], "--set hparams.EVAL_PERIOD",
         ["1000"]),
        (BASE, ["hparams.WARMUP_EPOCHS=1e400"], "--set hparams.WARMUP_EPOCHS", ["integer"]),
        (BASE, ["minutes_per_run=1e308"], "--set minutes_per_run", ["10080"]),
        (BASE, ["walltime_overhead_minutes=.inf"], "--set walltime_overhead_minutes",
         ["finite"]),
        (BASE, ["hparams.LR=1e308"], "--set hparams.LR", ["1000"]),
        (BASE, ["hparams.LR=-1"], "--set hparams.LR", ["greater than 0"]),
        (BASE, ["hparams.WD=1.0e+400"], "--set hparams.WD", ["finite"]),
        (BASE, ["hparams.MOM=2"], "--set hparams.MOM", ["less than or equal to 1"]),
        (BASE, ["hparams.LABELSMOOTHING=1"], "--set hparams.LABELSMOOTHING", ["less than 1"]),
        (BASE, ["hparams.BN_GROUP=99999999999"], "--set hparams.BN_GROUP", ["1024"]),
        (BASE, ["hparams.NUMEPOCHS=" + "9" * 4301], "--set hparams.NUMEPOCHS",
         ["exceeded maximum size", "..."]),
        (BASE + "runs: " + "9" * 4301 + "\n", [], "site.yaml:5 key 'runs'",
         ["exceeded maximum size"]),
        (BASE + "time_margin_minutes: " + "9" * 5000 + "\n", [], "key 'time_margin_minutes'",
         ["exceeded maximum size"]),
        # 11. characters YAML refuses, in a --set or a file: said, not kept as text
        (BASE, ["partition=a\x01b"], "--set", ["value of 'partition' at character 2",
                                                "control character (U+0001)"]),
        (BASE, ["hparams.LR=\x01"], "--set", ["U+0001"]),
        (BASE, ["partition=a\udcffb"], "--set", ["the byte 0xff, which is not UTF-8"]),
        (BASE, ["env.X=\x9b[2J"], "--set", ["U+009B"]),
        (BASE, ["part\x1bition=gpu"], "--set", ["the key at character 5", "U+001B"]),
        (BASE + "partition: a\0b\n", [], "site.yaml:5", ["column 13 holds a NUL byte"]),
        (BASE + "env:\n  A: x\x07\n", [], "site.yaml:6", ["control character (U+0007)"]),
    ],
)
def test_hostile_site_values_name_the_place(
    tmp_path: Path, text: str, overrides: list[str], where: str, fragments: list[str]
) -> None:
    error = site_error(tmp_path, text, overrides)
    shown = error.render()
    assert where in shown, shown
    for fragment in fragments:
        assert fragment in shown, (fragment, shown)


def test_env_values_keep_the_text_written(tmp_path: Path) -> None:
    cfg = resolved(
        tmp_path,
        BASE + "account: 0123\nenv:\n  C: 010\n  D: 1:30\n  E: 1.0e+3\n  F: true\n  G: off\n"
        '  H: 2024-01-01\n  I: ""\n  J: "true"\n  K: 0x1F\n  L: "two\\nlines\\tand tab"\n',
        ["env.Y=1:30", "env.Z=0o17", "system.env.W=010", "partition=007"],
    )
    assert cfg.site.account == "0123" and cfg.site.partition == "007"
    assert cfg.site.env == {
        "C": "010", "D": "1:30", "E": "1.0e+3", "F": "1", "G": "0", "H": "2024-01-01", "I": "",
        "J": "true", "K": "0x1F", "L": "two\nlines\tand tab", "Y": "1:30", "Z": "0o17",
    }
    assert cfg.spec.env["W"] == "010"
    assert cfg.runs == 5 and isinstance(cfg.runs, int)


def test_rendered_env_values_pass_bash_and_shellcheck(tmp_path: Path) -> None:
    cfg = resolved(tmp_path, BASE + 'env:\n  C: 010\n  L: "two\\nlines"\n')
    script = tmp_path / "job.sbatch"
    script.write_text(render_training(cfg, job_name="t", run_indices=[1]))
    assert "export C=010\n" in script.read_text()
    check_scripts(script)


def test_merge_keys_follow_yaml_1_1(tmp_path: Path) -> None:
    cfg = resolved(
        tmp_path,
        BASE + "env:\n  <<: [{A: '1', B: '2'}, {A: '3', C: '4'}]\n  B: '5'\n",
    )
    assert cfg.site.env == {"A": "1", "B": "5", "C": "4"}
    assert cfg.origin_of("site.env.B").endswith("site.yaml:7")
    doc = parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "t.yaml")
    assert doc.data["other"] == {"x": 1, "y": 3}


@pytest.mark.parametrize(
    ("image", "is_file"),
    [
        ("nvcr.io/nvidia/mxnet:23.04-py3", False),
        ("nvcr.io#nvidia/mxnet:23.04-py3", False),
        ("docker://nvcr.io/nvidia/mxnet:23.04-py3", False),
        ("oras://ghcr.io/x/mx.sif", False),
        ("library://x/y/mx.sif", False),
        ("/abs/mx.sqsh", True),
        ("images/mx.sqsh", True),
        ("mx.sif", True),
        ("./mx", True),
        ("~/mx.squashfs", True),
    ],
)
def test_image_kind(image: str, is_file: bool) -> None:
    assert image_is_file(image) is is_file


def test_image_paths_resolve_like_other_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    site = conf / "site.yaml"
    site.write_text(BASE.replace("nvcr.io/nvidia/mxnet:23.04-py3", "images/mx.sqsh"))
    assert resolve(*SYSTEM, site).site.image == str(conf / "images" / "mx.sqsh")
    site.write_text(BASE.replace("nvcr.io/nvidia/mxnet:23.04-py3", "~/mx.sqsh"))
    assert resolve(*SYSTEM, site).site.image == str(tmp_path / "home" / "mx.sqsh")
    assert resolve(*SYSTEM, site, ["image=images/mx.sqsh"]).site.image == str(
        work / "images" / "mx.sqsh"
    )
    assert resolve(*SYSTEM, site, ["image=~/x/mx.sif"]).site.image == str(
        tmp_path / "home" / "x" / "mx.sif"
    )
    for ref in ("nvcr.io#nvidia/mxnet:23.04-py3", "docker://nvcr.io/nvidia/mxnet:23.04-py3"):
        assert resolve(*SYSTEM, site, [f"image={ref}"]).site.image == ref


def test_files_that_are_not_site_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(BASE + "# " + "x" * MAX_FILE_BYTES + "\n")
    many = tmp_path / "many.yaml"
    many.write_text(BASE + "srun_args: [" + "1," * 100_001 + "]\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(BASE.encode() + b"partition: caf\xe9\n")
    cases = {
        big: "more than the 1024 KiB such a file may have",
        many: "holds more than 100000 values",
        latin: "latin.yaml:5: not UTF-8 text: byte 0xe9",
        tmp_path: "a folder, not a regular file",
    }
    for path, fragment in cases.items():
        with pytest.raises(UserError) as error:
            resolve(*SYSTEM, path)
        assert fragment in error.value.render()
        assert "alias" not in error.value.render()
    bom = tmp_path / "bom.yaml"
    bom.write_text("\ufeff" + BASE)
    assert resolve(*SYSTEM, bom).site.dataset_dir == Path("/d")


def test_cli_exit_2_without_traceback_or_hang(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(BASE)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(BASE.encode() + b"partition: g\0pu\n")
    digits = tmp_path / "digits.yaml"
    digits.write_text(BASE + "runs: " + "9" * 4301 + "\n")
    render = ["render", "-s", *SYSTEM[:1], "-r", SYSTEM[1], "-d", str(tmp_path / "out")]
    cases = [
        (["--site", "/dev/zero"], {}, "not a regular file"),
        (["--site", str(fifo)], {}, "not a regular file"),
        (["--site", str(site), "--runs", "0"], {}, "--runs: 0 runs is out of range"),
        (["--site", str(site), "--runs", "100000"], {}, "give 1 to 99"),
        (["--site", str(site), "--set", "env=" + "[" * 900 + "]" * 900], {}, "nested too deeply"),
        ([], {"HPCREPRO_SITE": str(tmp_path / "gone.yaml")}, "$HPCREPRO_SITE: site file not found"),
        (["--site", str(site), "--set", "hparams.NUMEPOCHS=99999999999999999999999"], {}, "1000"),
        (["--site", str(site), "--set", "minutes_per_run=1e308"], {}, "10080"),
        (["--site", str(site), "--set", "partition=a\x01b"], {}, "U+0001"),
        (["--site", str(site), "--set", os.fsdecode(b"partition=a\xffb")], {}, "not UTF-8"),
        (["--site", str(nul)], {}, "NUL byte"),
        (["--site", str(digits)], {}, "exceeded maximum size"),
    ]
    for args, extra_env, fragment in cases:
        env = {**os.environ, **extra_env}
        result = run_cli(*render, *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert fragment in result.stderr, (fragment, result.stderr)


def test_submit_runs_zero_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(BASE.replace("/l", str(tmp_path / "logs")))
    env = {**os.environ, "HPCREPRO_STATE_DIR": str(tmp_path / "state")}
    result = run_cli("submit", "--system", SYSTEM[0], "--version", SYSTEM[1], "--site", str(site),
                     "--runs", "0", "--dry-run", env=env)
    assert result.returncode == 2, result.stderr
    assert "--runs: 0 runs is out of range" in result.stderr
