"""The command line follows the conventions users expect: --version, shell completion, --json
that prints one document, one meaning per short option, output that grep can read, and errors
that name their real cause (an unknown key, YAML's booleans) — all through the real CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import ttyrun
from campaign_helpers import SYSTEM, hpcrepro, make_site
from campaign_helpers import cli_env as campaign_env

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT.parent / "shared" / "research" / "mlperf-resnet-results"


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *map(str, args)],
        capture_output=True, text=True, env=env or ttyrun.cli_env(), timeout=300,
    )  # fmt: skip


def site_yaml(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"runtime: none\ndataset_dir: {tmp_path}\nlog_dir: {tmp_path}\n{text}")
    return path


def test_version_and_shell_completion() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    done = cli("--version")
    assert done.returncode == 0 and done.stdout == f"hpcrepro {project['version']}\n"
    assert "--install-completion" in cli("--help").stdout
    script = cli("--show-completion", "bash")
    assert script.returncode == 0 and "_HPCREPRO_COMPLETE=complete_bash" in script.stdout
    assert "complete -o default -F _hpcrepro_completion hpcrepro" in script.stdout
    # what bash asks when TAB is pressed after `hpcrepro sub` and `hpcrepro submit --sys`
    for words, cword, wanted in (("hpcrepro sub", "1", "submit"), ("hpcrepro submit --sys", "2",
                                                                   "--system")):
        env = {**ttyrun.cli_env(), "COMP_WORDS": words, "COMP_CWORD": cword,
               "_HPCREPRO_COMPLETE": "complete_bash"}  # fmt: skip
        assert cli(env=env).stdout.split() == [wanted]
    # a command's --version is still the MLPerf round
    shown = cli("systems", "--version", "r4.0", "--json")
    assert shown.returncode == 0
    assert {row["version"] for row in json.loads(shown.stdout)} == {"r4.0"}


def _commands() -> list[tuple[str, object]]:
    import typer.main

    from hpcrepro.cli import app

    found = []

    def walk(command: object, path: str) -> None:
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def test_every_short_option_means_one_thing_in_every_command() -> None:
    """-s system, -r MLPerf round (--version), -d a folder written into, -o a file written: the
    scheme in the README; every command that takes the long option has the short one."""
    scheme = {"-s": "--system", "-r": "--version", "-d": "--dir", "-o": "--output"}
    seen: dict[str, set[str]] = {}
    for path, command in _commands():
        for param in getattr(command, "params", []):
            names = [*param.opts, *param.secondary_opts]
            shorts = [n for n in names if re.fullmatch(r"-[A-Za-z]", n)]
            longs = [n for n in names if n.startswith("--")]
            for short in shorts:
                seen.setdefault(short, set()).update(longs)
            if path and any(long in scheme.values() for long in longs):
                wanted = next(s for s, long in scheme.items() if long in longs)
                assert wanted in shorts, f"hpcrepro {path}: {longs} lacks {wanted}"
    assert seen == {short: {long} for short, long in scheme.items()}, seen


def test_config_show_explain_piped_keeps_every_key_on_one_line(tmp_path: Path) -> None:
    long_dir = tmp_path / ("a-rather-long-folder-name-" * 4) / "imagenet"
    site = site_yaml(tmp_path, f"imagenet_dir: {long_dir}\nconstraint: '[rack1|rack2]'\n")
    args = ("config", "show", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", site, "--explain")
    explained = json.loads(cli(*args, "--json").stdout)
    piped = cli(*args)
    assert piped.returncode == 0 and "\x1b" not in piped.stdout
    lines = piped.stdout.splitlines()
    assert len(lines) == len(explained)
    for key, item in explained.items():
        value = item["value"] if isinstance(item["value"], str) else json.dumps(item["value"])
        found = [line for line in lines if line.split()[0] == key]  # what `grep KEY` finds
        assert len(found) == 1 and value in found[0] and found[0].endswith(f"# {item['origin']}")
    assert explained["system"]["origin"] == "--system"
    assert explained["version"]["origin"] == "--version"
    assert explained["site_file"]["origin"] == "--site"
    assert explained["site.imagenet_dir"]["origin"] == f"{site}:4"
    with_env = {**ttyrun.cli_env(), "HPCREPRO_SITE": str(site)}
    from_env = cli(*args[:-3], "--explain", "--json", env=with_env)
    assert json.loads(from_env.stdout)["site_file"]["origin"] == "$HPCREPRO_SITE"

    # on a terminal: a table, values shown literally (no rich markup), keys never cut
    shown = ttyrun.run_on_tty(list(map(str, args)), env=ttyrun.cli_env(), tty_stdout=True)
    assert shown.returncode == 0
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.tty)
    assert "[rack1|rack2]" in screen and "spec.hparams.LR" in screen


def test_a_misspelt_site_key_is_the_only_problem_named(tmp_path: Path) -> None:
    """'runtme: none' leaves runtime at pyxis, whose checks (the reference workload needs an
    image) would fail: the typo is named, not what it broke."""
    site = tmp_path / "site.yaml"
    site.write_text(f"runtme: none\nworkload: reference\ndataset_dir: {tmp_path}\nlog_dir: /x\n")
    for args in (
        ("config", "show", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", site),
        ("render", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", site, "-d", tmp_path / "out"),
        ("submit", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", site, "--dry-run"),
    ):
        done = cli(*args)
        assert done.returncode == 2 and done.stdout == "", done
        assert "site.yaml:1 key 'runtme': unknown key 'runtme' (did you mean 'runtime'" in (
            done.stderr
        )
        assert "image" not in done.stderr.split("hint:")[0] and "Traceback" not in done.stderr
    (tmp_path / "detect.yaml").write_text("partiton: gpu\n")  # would go to the default partition
    done = cli("detect", "--all-nodes", "--nodes", "1", "--site", tmp_path / "detect.yaml")
    assert done.returncode == 2
    assert "unknown key 'partiton' (did you mean 'partition'" in done.stderr


def test_a_yaml_boolean_for_a_text_key_says_how_to_quote_it(tmp_path: Path) -> None:
    site = site_yaml(tmp_path)
    base = ("config", "show", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", site)
    done = cli(*base, "--set", "train_command=false")
    assert done.returncode == 2
    assert "--set train_command: Input should be a valid string (got False)" in done.stderr
    assert """--set 'train_command="false"'""" in done.stderr
    quoted = cli(*base, "--set", 'train_command="false"', "--json")
    assert json.loads(quoted.stdout)["site"]["train_command"] == "false"
    site.write_text(site.read_text() + "train_command: yes\n")
    done = cli(*base)
    assert done.returncode == 2 and 'train_command: "true" in the file' in done.stderr


def test_render_json_is_one_document_and_errors_stay_on_stderr(tmp_path: Path) -> None:
    site = site_yaml(tmp_path)
    out = tmp_path / "review"
    args = ("render", "-s", "dgxa100_8x8", "-r", "r3.0", "--site", site, "-d", out, "--json")
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["script"] == str(out / "train.sbatch") and Path(document["script"]).is_file()
    assert document["runs"] == 5 and document["config"] == str(out / "resolved-config.yaml")
    (out / "train.sbatch").write_text("# edited\n")
    refused = cli(*args)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "differs" in refused.stderr and "choose another -d folder" in refused.stderr


def test_submit_resume_cancel_json(tmp_path: Path) -> None:
    site = make_site(tmp_path, env={"FAKE_TRAIN_SLEEP": "60"})
    env = campaign_env(tmp_path)
    local = ("--set", "nodes=1", "--set", "gpus_per_node=1", "--backend", "local")
    dry = hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", *local, "--dry-run",
                   "--json", env=env)  # fmt: skip
    planned = json.loads(dry.stdout)
    assert planned["action"] == "submit" and planned["dry_run"] and planned["submitted"] == []
    assert [s["stage"] for s in planned["stages"]] == ["run-01", "collect"]

    done = hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", "--name", "j", *local,
                    "--json", env=env)  # fmt: skip
    submitted = json.loads(done.stdout)
    assert submitted["campaign"] == "j" and len(submitted["submitted"]) == 2
    assert all(stage["job_id"].startswith("local:j.") for stage in submitted["stages"])
    assert Path(submitted["folder"], "campaign.json").is_file()

    cancelled = json.loads(hpcrepro("cancel", "j", "--json", env=env).stdout)
    assert cancelled["action"] == "cancel" and cancelled["cancelled"] is True
    assert cancelled["exit_code"] == 0 and cancelled["messages"]
    resumed = json.loads(hpcrepro("resume", "j", "--json", env=env, check=False).stdout)
    assert resumed["action"] == "resume" and resumed["campaign"] == "j"

    missing = hpcrepro("cancel", "no-such-campaign", "--json", env=env, check=False)
    assert missing.returncode == 2 and missing.stdout == "" and "error:" in missing.stderr


def test_collect_of_a_campaign_whose_runs_all_failed_exits_1(tmp_path: Path) -> None:
    site = make_site(tmp_path, env={"FAKE_TRAIN_SLEEP": "0.3", "FAKE_TRAIN_STATUS": "aborted"})
    env = campaign_env(tmp_path)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "2", "--name", "lost",
             "--set", "nodes=1", "--set", "gpus_per_node=1", "--backend", "local", env=env)
    hpcrepro("status", "lost", "--watch", env=env, check=False, timeout=180)  # fmt: skip
    done = hpcrepro("collect", "lost", env=env, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == "no valid score: 2 of 2 runs failed; at most 1 may fail"
    assert "Warning" not in done.stderr


def test_no_numpy_warning_reaches_the_user_with_one_run(tmp_path: Path) -> None:
    """One converged run: the olympic mean of the RCP check needs three; it says so, and numpy's
    'Mean of empty slice' never reaches the terminal."""
    source = RESULTS / "v4.0" / "NVIDIA" / "eos_n8_ngc24.04_mxnet" / "result_0.txt"
    if not source.is_file():
        pytest.fail(f"the research corpus is missing {source}")
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(source, folder / "result_0.txt")
    plot = tmp_path / "runs.png"
    done = cli("collect", folder, "-s", "eos_n8", "-r", "r4.0", "--no-official-check",
               "--plot", plot, "--format", "json")  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Warning" not in done.stderr and "site-packages" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert "needs at least 3 runs" in json.dumps(report)
    assert plot.stat().st_size > 0


def test_help_version_and_status_load_no_heavy_module(tmp_path: Path) -> None:
    """rich (progress, tables) and numpy load only where they draw or compute."""
    code = (
        "import sys\nfrom hpcrepro import cli\nsys.argv = ['hpcrepro', *sys.argv[1:]]\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'rich', 'numpy', 'pydantic', 'yaml', 'jinja2'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}), file=sys.stderr)"
    )
    env = {**ttyrun.cli_env(), "HOME": str(tmp_path), "HPCREPRO_STATE_DIR": str(tmp_path / "s")}
    for argv in (["--help"], ["--version"], ["status"], ["status", "--json"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True, env=env, check=False)  # fmt: skip
        assert done.stderr.strip().splitlines()[-1] == "[]", (argv, done.stderr)


def test_readme_documents_the_option_scheme_and_json() -> None:
    text = (ROOT / "README.md").read_text()
    for needle in ("`-s`", "`-r`", "`-d`", "`-o`", "--json", "--install-completion", "--version"):
        assert needle in text, needle
