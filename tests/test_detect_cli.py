"""`hpcrepro detect` and `python3 -m hpcrepro.detect` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hpcrepro
from hpcrepro.detect.model import NodeDescription, load_descriptions

DATA = Path(__file__).parent / "data" / "detect"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", "detect", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_this_node_without_gpu_exits_0_with_one_notice() -> None:
    done = run("--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    notices = [line for line in done.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "describing CPUs only" in notices[0]
    node = NodeDescription.from_dict(json.loads(done.stdout))
    assert node.gpus == [] and node.cpu.threads and node.memory_bytes
    summary = run()
    assert summary.returncode == 0 and "gpus      none (" in summary.stdout


def test_capture_needs_only_the_standard_library(tmp_path: Path) -> None:
    """The lead's H200 capture runs `python3 -m hpcrepro.detect --json` where only the standard
    library and nvidia-ml-py exist: run it with site-packages switched off (-S -I)."""
    package = Path(hpcrepro.__file__).parent
    shutil.copytree(package, tmp_path / "hpcrepro", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "node.json"
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import runpy; "
            "sys.argv = ['hpcrepro.detect', '--json', '-o', sys.argv[2]]; "
            "runpy.run_module('hpcrepro.detect', run_name='__main__')",
            str(tmp_path),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "notice: nvidia-ml-py is not installed: describing CPUs only\n"
    assert json.loads(done.stdout) == json.loads(out.read_text())
    assert load_descriptions(out)[0].nvml.available is False


def test_from_json_writes_system_and_mlperf_json(tmp_path: Path) -> None:
    system = tmp_path / "systems" / "mycluster_2x8.yaml"
    mlperf = tmp_path / "mlperf" / "mycluster_2x8.json"
    done = run(
        "--from-json",
        str(DATA / "h200_8gpu_handwritten.json"),
        "--nodes",
        "2",
        "--write-system",
        str(system),
        "--mlperf-json",
        str(mlperf),
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {system}: system 'mycluster_2x8', 2 node(s) x 8 GPUs" in done.stdout
    assert "base: h200_1x8" in done.stdout
    assert "  status: Available on-premise | Available cloud" in done.stdout
    from hpcrepro.catalog import load_catalog  # imported here: it loads pydantic

    version = load_catalog(system.parent).get("mycluster_2x8", "r4.0")
    assert (version.nodes, version.batch_per_gpu, version.global_batch) == (2, 200, 3200)
    description = json.loads(mlperf.read_text())
    assert description["number_of_nodes"] == "2" and description["status"] == ""


def test_several_nodes_report_differences(tmp_path: Path) -> None:
    out = tmp_path / "nodes.json"
    done = run("--from-json", str(DATA / "h200_3nodes_handwritten.json"), "--json", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 nodes differ in 3 fact(s):" in done.stderr
    assert (
        "  driver: 550.54.15 on h200-node001, h200-node003; 535.161.08 on h200-node002"
        in done.stderr
    )
    assert [n["hostname"] for n in json.loads(done.stdout)] == [
        "h200-node001",
        "h200-node002",
        "h200-node003",
    ]
    assert json.loads(out.read_text()) == json.loads(done.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from-json", "/nonexistent/node.json"],
            "error: /nonexistent/node.json: file not found",
        ),
        (
            ["--from-json", "{data}/h200_8gpu_handwritten.json", "--write-system", "{tmp}/x.yml"],
            "does not end in .yaml",
        ),
        (["--all-nodes"], "error: --nodes: --all-nodes needs the number of nodes to describe"),
        (
            ["--all-nodes", "--nodes", "2", "--site", "/nonexistent/site.yaml"],
            "site file not found",
        ),
        (
            ["--all-nodes", "--from-json", "{tmp}/x.json"],
            "--from-json and --all-nodes exclude each other",
        ),
        (
            [
                "--from-json",
                "{data}/l40s_4gpu_handwritten.json",
                "--nodes",
                "99999",
                "--write-system",
                "{tmp}/big.yaml",
            ],
            "above 67840",
        ),
    ],
)
def test_user_mistakes_exit_2_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = run(*[a.replace("{data}", str(DATA)).replace("{tmp}", str(tmp_path)) for a in args])
    assert done.returncode == 2, done.stdout + done.stderr
    assert not list(tmp_path.iterdir())
    assert message in done.stderr and "Traceback" not in done.stderr


def test_gpu_request_needs_a_gpu_count(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("partition: gpu\ngpu_request: gres\ndataset_dir: /data\nlog_dir: /logs\n")
    done = run("--all-nodes", "--nodes", "2", "--site", str(site))
    assert done.returncode == 2
    assert "error: --gpus-per-node: the site requests GPUs with gres" in done.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('partition: "gpu\\necho pwned"', "cannot go into an '#SBATCH' line"),
        ("account: 'proj #1'", "cannot go into an '#SBATCH' line"),
        ("qos: $(touch x)", "cannot go into an '#SBATCH' line"),
        ('constraint: "a100\'ib"', "cannot go into an '#SBATCH' line"),
        ("exclusive: maybe", "Input should be a valid boolean"),
        ("gpu_request: all", "Input should be 'none', 'gpus-per-node' or 'gres'"),
    ],
)
def test_hostile_site_values_never_reach_sbatch(tmp_path: Path, line: str, message: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(f"{line}\n")
    done = run("--all-nodes", "--nodes", "2", "--site", str(site), "--job-folder", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert f"error: {site}:1 key" in done.stderr and message in done.stderr
    assert "submitted" not in done.stderr and not list(tmp_path.glob("*submission*"))


@pytest.mark.parametrize("folder", ["jobs\necho pwned", "jobs#1", "jobs%j"])
def test_hostile_job_folder_is_refused(tmp_path: Path, folder: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("partition: debug\n")
    done = run(
        "--all-nodes", "--nodes", "1", "--site", str(site), "--job-folder", str(tmp_path / folder)
    )
    assert done.returncode == 2, done.stderr
    assert "error: --job-folder: job folder" in done.stderr


def test_command_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, hpcrepro.commands.detect; "
        "heavy = {'pydantic', 'submitit', 'pynvml', 'yaml', 'mlperf_logging', 'numpy', "
        "'hpcrepro.detect'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path) -> None:
    system, mlperf = tmp_path / "mine_1x2.yaml", tmp_path / "mine.json"
    system.write_text("# my edits\n")
    mlperf.write_text("{}\n")
    source = str(DATA / "h200_2gpu_captured.json")
    for option, target in (("--write-system", system), ("--mlperf-json", mlperf)):
        done = run("--from-json", source, option, str(target))
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"error: {option}: {target} exists" in done.stderr and "--force" in done.stderr
    assert system.read_text() == "# my edits\n" and mlperf.read_text() == "{}\n"
    done = run(
        "--from-json",
        source,
        "--write-system",
        str(system),
        "--mlperf-json",
        str(mlperf),
        "--force",
    )
    assert done.returncode == 0, done.stderr
    assert "system: mine_1x2" in system.read_text() and "number_of_nodes" in mlperf.read_text()
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    done = run("--from-json", source, "--write-system", str(folder), "--force")
    assert done.returncode == 2 and "is a folder, not a file" in done.stderr


def test_the_shipped_catalog_is_never_written(tmp_path: Path) -> None:
    from hpcrepro.resources import systems_dir

    shipped = systems_dir() / "h200_1x8.yaml"
    before = shipped.read_bytes()
    link = tmp_path / "h200_1x8.yaml"
    link.symlink_to(shipped)
    for target in (shipped, link):
        done = run(
            "--from-json",
            str(DATA / "h200_2gpu_captured.json"),
            "--write-system",
            str(target),
            "--force",
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "is in hpcrepro's shipped catalog" in done.stderr
    assert shipped.read_bytes() == before
    assert not (systems_dir() / "new_1x2.yaml").exists()
    done = run(
        "--from-json",
        str(DATA / "h200_2gpu_captured.json"),
        "--write-system",
        str(systems_dir() / "new_1x2.yaml"),
    )
    assert done.returncode == 2 and not (systems_dir() / "new_1x2.yaml").exists()


def test_nonsense_values_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = json.loads((DATA / "h200_2gpu_captured.json").read_text())
    data["gpus"] = [dict(data["gpus"][0], index=i) for i in range(5000)]
    source = tmp_path / "many.json"
    source.write_text(json.dumps(data))
    out = tmp_path / "out"
    done = run(
        "--from-json",
        str(source),
        "--write-system",
        str(out / "x_1x8.yaml"),
        "--mlperf-json",
        str(out / "x.json"),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: {source} key 'gpus': 5000 GPUs in one node" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_capture_module_handles_a_bad_output_path_like_the_command(tmp_path: Path) -> None:
    def capture(target: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hpcrepro.detect", "-o", str(target)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    done = capture(tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"error: --output: cannot write {tmp_path}: " in done.stderr
    assert "Traceback" not in done.stderr
    assert run("-o", str(tmp_path)).stderr.splitlines()[-1] == done.stderr.splitlines()[-1]
    nested = tmp_path / "missing" / "node.json"
    done = capture(nested)
    assert done.returncode == 0, done.stderr
    assert load_descriptions(nested)[0].hostname


def test_many_alike_nodes_are_named_as_a_host_list(tmp_path: Path) -> None:
    node = json.loads((DATA / "h200_2gpu_captured.json").read_text())
    source = tmp_path / "nodes.json"
    source.write_text(json.dumps([dict(node, hostname=f"n{i:04d}") for i in range(200)]))
    done = run("--from-json", str(source), "--mlperf-json", str(tmp_path / "x.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "all 200 nodes are alike (n[0000-0199])"
