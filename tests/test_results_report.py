"""The pictures and the provenance of `collect`: the plot's roles and names, NVIDIA's published
score found from a result folder's place, the self-contained HTML report seen in a real browser
(headless Chromium) and escaped against hostile logs, provenance from the jobs' own output and
the package's system JSON filled from detect's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from results_helpers import rawify, research, run_cli  # noqa: F401

EOS_N8 = "v4.0/NVIDIA/eos_n8_ngc24.04_mxnet"  # result_4 aborted
H200 = "v4.0/NVIDIA/h200_ngc24.04_mxnet"  # five valid runs
QUICK = ("--no-official-check",)


def _collection(folder: Path):  # type: ignore[no-untyped-def]
    from hpcrepro.results.collect import collect
    from hpcrepro.results.inputs import resolve

    return collect(resolve(folder, None, None, None), official=False)


def test_plot_marks_the_runs_the_olympic_mean_drops(research: Path) -> None:  # noqa: F811
    from hpcrepro.results import plot

    five = {item.name: item.role for item in plot.roles(_collection(research / H200))}
    assert five == {"result_0": plot.DROPPED_FASTEST, "result_1": plot.COUNTED,
                    "result_2": plot.COUNTED, "result_3": plot.DROPPED_SLOWEST,
                    "result_4": plot.COUNTED}
    # one aborted run: it is the slowest dropped; only the fastest valid run is dropped besides
    aborted = plot.roles(_collection(research / EOS_N8))
    assert [item.role for item in aborted] == [plot.COUNTED, plot.COUNTED, plot.DROPPED_FASTEST,
                                               plot.COUNTED, plot.NOT_COUNTED]
    assert aborted[4].why.startswith("aborted: never reached 0.759")


def test_plot_labels_are_the_run_names_status_shows(research: Path, tmp_path: Path) -> None:  # noqa: F811
    from hpcrepro.results import plot

    folder = tmp_path / "r4.0-logs"
    folder.mkdir()
    for index, source in enumerate(sorted((research / H200).glob("result_*.txt")), start=1):
        rawify(source, folder / f"run-{index:02d}_4711_2412031200{index}.log")
    names = [item.name for item in plot.roles(_collection(folder))]
    assert names == ["run-01", "run-02", "run-03", "run-04", "run-05"]


@pytest.mark.parametrize("layout", ["research", "mlcommons"])
def test_nvidia_result_folders_find_their_published_score_without_system(
    research: Path, tmp_path: Path, layout: str  # noqa: F811
) -> None:
    folder = research / "v3.0/NVIDIA/dgxh100_n8_ngc23.04_mxnet"
    args = []
    if layout == "mlcommons":  # <submitter>/results/<system>/resnet, as the repositories have it
        target = tmp_path / "NVIDIA" / "results" / "dgxh100_n8_ngc23.04_mxnet" / "resnet"
        shutil.copytree(folder, target)
        folder, args = target, ["--version", "r3.0"]
    code, out, err = run_cli("collect", str(folder), *args, "--format", "json", *QUICK)
    assert code == 0, err
    summary = json.loads(out)["summary"]
    assert summary["published_minutes"] == 2.664
    assert summary["published_source"] == (
        "catalog dgxh100_8x8 r3.0 (NVIDIA/results/dgxh100_n8_ngc23.04_mxnet)")
    # another submitter's folder has no NVIDIA score: none is made up
    code, out, _ = run_cli("collect", str(research / "v3.0/Dell/XE8640x4H100-SXM-80GB"),
                           "--format", "json", *QUICK)
    assert json.loads(out)["summary"]["published_minutes"] is None


HOSTILE = '<script>document.title="PWNED"</script><img src=x onerror=alert(1)>'


def _hostile_folder(research: Path, tmp_path: Path) -> Path:  # noqa: F811
    """EOS_N8's logs, one of them with a broken record of hostile text (the reports quote it in
    the run's reason and the problems) and one with a hostile name."""
    folder = tmp_path / "r4.0" / "eos"
    shutil.copytree(research / EOS_N8, folder)
    with (folder / "result_1.txt").open("a") as log:
        log.write(f':::MLLOG {{"key": "eval_accuracy", "value": {json.dumps(HOSTILE)}, "time_ms"\n')
    (folder / "result_<b onclick=x>bold.txt").write_text(
        (folder / "result_4.txt").read_text()[:4000])
    return folder


def _image_stats(png: Path) -> tuple[tuple[int, int], int, float]:
    """(width, height), distinct colours and the fraction of pixels that are not white."""
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(png)[..., :3]
    height, width = pixels.shape[:2]
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    not_white = float((pixels.min(axis=2) < 0.96).mean())
    return (width, height), colours, not_white


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: run scripts/install-system-deps.sh")
        pytest.skip("no chromium (scripts/install-system-deps.sh installs it)")
    return found


def test_html_report_is_self_contained_escaped_and_renders_in_chromium(
    research: Path, tmp_path: Path  # noqa: F811
) -> None:
    folder = _hostile_folder(research, tmp_path)
    page = tmp_path / "out" / "report.html"
    code, out, err = run_cli("collect", str(folder), "--format", "html", "-o", str(page), *QUICK)
    assert code == 1, err  # the broken run and the cut sixth log: no valid score
    assert out == "" and f"report written to {page}" in err
    html = page.read_text()
    # escaped: the hostile text is there as text, never as markup
    assert "<script" not in html and "<img src=x" not in html and "<b onclick" not in html
    assert "&lt;script&gt;" in html and "result_&lt;b onclick=x&gt;bold.txt" in html
    # self-contained: the only image is an embedded PNG, no link, no remote source or url()
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(sources) == 1 and sources[0].startswith("data:image/png;base64,")
    assert "<link" not in html and "url(" not in html and "http" not in html.lower().replace(
        "http-equiv", "")
    for heading in ("Runs and verdicts", "Summary", "Plot", "Provenance"):
        assert f"<h2>{heading}</h2>" in html
    assert "never reached 0.759" in html and "mlperf-logging version" in html

    shot = tmp_path / "shot.png"
    browser = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1400,1800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert browser.returncode == 0 and shot.is_file(), browser.stderr[-2000:]
    size, colours, not_white = _image_stats(shot)
    assert size == (1400, 1800)
    assert colours > 200  # text, tables, the plot's lines: not a blank or one-colour page
    assert not_white > 0.08, not_white
    assert "PWNED" not in browser.stderr


def test_provenance_from_the_jobs_output(research: Path, tmp_path: Path) -> None:  # noqa: F811
    """What a job prints (NVIDIA's :::SYSJSON, hpcrepro's :::DLPAL, NCCL's banner, nvidia-smi's
    header) becomes the report's driver, CUDA, NCCL, image and node list."""
    folder = tmp_path / "r4.0" / "job"
    folder.mkdir(parents=True)
    sysjson = (research / EOS_N8 / "result_0.txt").read_text().splitlines()[0]
    for index, source in enumerate(sorted((research / EOS_N8).glob("result_*.txt"))):
        log = rawify(source, folder / f"run-{index + 1:02d}_81_24120312000{index}.log", noise=False)
        head = [":::DLPAL /shared/images/resnet.sqsh 81 2 node[1-2]",
                "0: node1:99:99 [0] NCCL INFO NCCL version 2.19.3+cuda12.3"]
        text = log.read_text()
        log.write_text("\n".join(head) + "\n" + (sysjson + "\n" if index == 0 else "") + text)
    (folder / "nvidia-smi.log").write_text(
        "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |\n")
    code, out, err = run_cli("collect", str(folder), "--format", "json", *QUICK)
    assert code == 0, err
    provenance = json.loads(out)["summary"]["provenance"]
    # NVIDIA's :::SYSJSON wins over nvidia-smi's header and the NCCL banner, in whatever file
    assert provenance["driver"] == "535.129.03" and provenance["cuda"] == "12.4.1.003"
    assert provenance["nccl"] == "2.21.5"
    assert provenance["image"] == "/shared/images/resnet.sqsh"
    assert provenance["nodes"] == "node[1-2]"
    from importlib.metadata import version

    assert provenance["mlperf_logging_version"] == version("mlperf-logging")
    code, md, _ = run_cli("collect", str(folder), "--format", "md", *QUICK)
    assert "## Provenance" in md and "| NCCL (seen in the job) | 2.21.5 |" in md


def test_package_system_json_carries_provenance_and_detects_fields(
    research: Path, tmp_path: Path  # noqa: F811
) -> None:
    from test_results_cli import make_campaign

    campaign = make_campaign(research, tmp_path / "camp")
    detected = tmp_path / "detected.json"
    detected.write_text(json.dumps({"host_processor_model_name": "AMD EPYC 9654",
                                    "host_memory_capacity": "", "cooling": "liquid"}))
    tree = tmp_path / "submission"
    code, _out, err = run_cli("collect", str(campaign), "--package", str(tree),
                              "--system-json", str(detected))
    assert code == 0, err
    assert "mlperf-logging's package checker: no errors" in err
    system = json.loads((tree / "systems" / "eos_n8.json").read_text())
    assert system["host_processor_model_name"] == "AMD EPYC 9654"  # from detect
    assert system["cooling"] == "liquid"
    stack = system["other_software_stack"]
    assert stack["hpcrepro_version"] and stack["mlperf_logging_version"]
    assert "code_commit 6fe954378efe4a1a1bd665550b18ff8f26018def" in system["sw_notes"]
    code, _out, err = run_cli("collect", str(campaign), "--package", str(tmp_path / "p2"),
                              "--system-json", str(tmp_path / "nope.json"))
    assert code == 2 and "nope.json" in err and "Traceback" not in err
