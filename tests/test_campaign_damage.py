"""Damaged campaign state: a manifest of the wrong shape, an unreadable manifest, a broken entry in
the campaign index. Each is one clear message naming the file (and the manifest field), exit code
2 for a single campaign, a warning for the all-campaigns listing; never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from campaign_helpers import hpcrepro, sample_manifest
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.errors import UserError

Damage = Callable[[dict[str, Any]], None]


def _delete(*keys: str | int) -> Damage:
    def damage(data: dict[str, Any]) -> None:
        target: Any = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return damage


def _set(value: Any, *keys: str | int) -> Damage:
    def damage(data: dict[str, Any]) -> None:
        target: Any = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return damage


# (damage, the field the message must name, what it must say); stage 1 is run-01, stage 2 run-02.
SHAPE_DAMAGE: list[tuple[Damage, str, str]] = [
    *[
        (_delete("stages", 1, key), f"stages[1].{key} is missing", "missing")
        for key in ("kind", "name", "jobs", "runs", "verdicts", "replaces")
    ],
    (_delete("stages", 2, "jobs", 0, "state"), "stages[2].jobs[0].state", "missing"),
    (_set([], "stages", 1, "verdicts"), "stages[1].verdicts", "should be an object"),
    (_set([{"verdict": "valid"}], "stages", 1, "verdicts"), "stages[1].verdicts", "a list"),
    (
        _set("valid", "stages", 1, "verdicts", "1"),
        "stages[1].verdicts['1']",
        "should be an object, found the text 'valid'",
    ),
    (
        _set({"verdict": "void"}, "stages", 1, "verdicts", "x"),
        "stages[1].verdicts['x']",
        "not a run number",
    ),
    (
        _set({"verdict": "void"}, "stages", 1, "verdicts", "7"),
        "stages[1].verdicts['7']",
        "not a run of this stage",
    ),
    (
        _set("great", "stages", 1, "verdicts", "1", "verdict"),
        "stages[1].verdicts['1'].verdict",
        "one of valid, invalid, void, not_run",
    ),
    (_set(["2"], "stages", 2, "runs"), "stages[2].runs[0]", "found the text '2'"),
    (_set(2, "stages", 2, "runs"), "stages[2].runs", "should be a list, found the number 2"),
    (_set([], "stages", 2, "runs"), "stages[2].runs", "a training stage has at least one run"),
    (_set("abc", "stages", 1, "jobs"), "stages[1].jobs", "should be a list"),
    (_set(["x"], "stages", 1, "jobs"), "stages[1].jobs[0]", "should be an object"),
    (
        _set(1700000000, "stages", 1, "jobs", 0, "start"),
        "stages[1].jobs[0].start",
        "should be a text or null",
    ),
    (_set("exploded", "stages", 1, "jobs", 0, "state"), "stages[1].jobs[0].state", "one of"),
    (
        lambda data: data["stages"][1]["jobs"][0].update(state="running", job_id=None),
        "stages[1].jobs[0].job_id",
        "is null, but a running job has a scheduler job id",
    ),
    (
        _set("--user=root", "stages", 1, "jobs", 0, "job_id"),
        "stages[1].jobs[0].job_id",
        "should be a local job id",
    ),
    (_set("4", "stages", 1, "jobs", 0, "nodes"), "stages[1].jobs[0].nodes", "whole number"),
    (_set("me@host", "local_runner"), "local_runner", "should be an object or null"),
    (_set({"pid": "12"}, "local_runner"), "local_runner.pid", "whole number"),
    (_set(["nope"], "stages", 1, "after"), "stages[1].after[0]", "names no stage"),
    (_set("run-01", "stages", 2, "name"), "stages[2].name", "also the name of stages[1]"),
    (_set("run 01; rm -rf ~", "stages", 1, "name"), "stages[1].name", "a name of letters"),
    (_set("c\n", "name"), "name", "a name of letters"),
    (_set([10**30], "stages", 1, "runs"), "stages[1].runs[0]", "a run number from 1 to"),
    (_set("later", "stages", 3, "dependency"), "stages[3].dependency", "afterok, afterany"),
    (_set("dance", "stages", 0, "kind"), "stages[0].kind", "one of image, prep, train"),
    (_set(True, "runs_required"), "runs_required", "found true"),
    (_set(0, "runs_required"), "runs_required", "at least 1"),
    (_set("yesterday", "created"), "created", "UTC time"),
    (_set("pbs", "backend"), "backend", "one of slurm, local"),
    (_set("0.759", "target_accuracy"), "target_accuracy", "a number"),
    (_set("r2.1", "inputs"), "inputs", "an object"),
    (_set([1], "inputs", "overrides"), "inputs.overrides[0]", "a text"),
    (_delete("fingerprint"), "fingerprint is missing", "missing"),
    (_set({"stages": "x"}, "stages"), "stages", "should be a list"),
    (lambda data: data.update(stages=[data["stages"][0]]), "stages", "no training stage"),
]


def _write(folder: Path, data: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.json"
    path.write_text(json.dumps(data))
    return path


def test_the_sample_manifest_has_the_shape_hpcrepro_writes(tmp_path: Path) -> None:
    data = sample_manifest()
    assert manifest_io.load(_write(tmp_path, data)).to_json() == data


@pytest.mark.parametrize(("damage", "field", "what"), SHAPE_DAMAGE)
def test_a_manifest_of_the_wrong_shape_names_file_and_field(
    tmp_path: Path, damage: Damage, field: str, what: str
) -> None:
    data = sample_manifest()
    damage(data)
    path = _write(tmp_path, data)
    with pytest.raises(UserError) as caught:
        manifest_io.load(path)
    text = caught.value.render()
    assert text.startswith(f"{path}: damaged manifest: {field}")
    assert what in text and "restore it from a backup" in text


@pytest.mark.parametrize("job_id", ["--user=root", "-u", "123 456", "123;ls", "12,13", "", "x1"])
def test_a_slurm_job_id_that_is_not_one_is_refused_when_read(tmp_path: Path, job_id: str) -> None:
    """Job ids go to scancel and sacct: an option or a list must never pass for one."""
    data = sample_manifest(backend="slurm")
    for number, item in enumerate(data["stages"], start=1):
        item["jobs"][0]["job_id"] = str(4000 + number)
    data["stages"][1]["jobs"][0]["job_id"] = job_id
    path = _write(tmp_path, data)
    with pytest.raises(UserError, match=r"stages\[1\]\.jobs\[0\]\.job_id should be a Slurm job id"):
        manifest_io.load(path)


@pytest.mark.parametrize("job_id", ["4211", "4211_3", "4211+1"])
def test_slurm_job_ids_of_every_form_are_accepted(tmp_path: Path, job_id: str) -> None:
    data = sample_manifest(backend="slurm")
    for item in data["stages"]:
        item["jobs"][0]["job_id"] = job_id
    assert manifest_io.load(_write(tmp_path, data)).to_json() == data


def test_a_huge_value_is_quoted_clipped(tmp_path: Path) -> None:
    data = sample_manifest()
    data["stages"][1]["jobs"][0]["state"] = "x" * 100_000
    with pytest.raises(UserError) as caught:
        manifest_io.load(_write(tmp_path, data))
    assert "stages[1].jobs[0].state" in caught.value.message
    assert len(caught.value.render()) < 800


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"format": 1, "runs_required": 1' + b"0" * 5000 + b"}", "invalid JSON"),
        (b'{"format": 2}', "has manifest format 2"),
    ],
)
def test_an_unreadable_manifest_is_a_user_error(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "campaign.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=what) as caught:
        manifest_io.load(path)
    assert str(path) in caught.value.render() and len(caught.value.render()) < 800


def test_a_manifest_that_is_a_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "campaign.json").mkdir()
    with pytest.raises(UserError, match="a folder, not a regular file"):
        manifest_io.load(tmp_path / "campaign.json")


def test_a_manifest_that_is_a_fifo_does_not_hang_status(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "campaign.json")
    done = hpcrepro("status", str(tmp_path), env=_env(tmp_path), check=False, timeout=20)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{tmp_path / 'campaign.json'}: cannot read it (a FIFO, not a regular file)" in (
        done.stderr
    )


# --- through the command line, as a user meets it


def _register(state: Path, name: str, content: bytes) -> Path:
    entry = state / "campaigns" / name
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(content)
    return entry


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "HPCREPRO_STATE_DIR": str(tmp_path / "state")}


def test_status_lists_healthy_campaigns_beside_damaged_ones(tmp_path: Path) -> None:
    env = _env(tmp_path)
    state = tmp_path / "state"
    for name in ("good", "zz-good"):
        _write(tmp_path / name, sample_manifest(name))
        _register(state, name, f"{tmp_path / name}\n".encode())
    bad = sample_manifest("bad-shape")
    del bad["stages"][1]["kind"]
    _write(tmp_path / "bad-shape", bad)
    _register(state, "bad-shape", f"{tmp_path / 'bad-shape'}\n".encode())
    (tmp_path / "folder-manifest" / "campaign.json").mkdir(parents=True)
    _register(state, "folder-manifest", f"{tmp_path / 'folder-manifest'}\n".encode())
    (state / "campaigns" / "a-dir").mkdir()
    _register(state, "binary", b"\xff\xfe/x\n")
    _register(state, "long", b"/" + b"a" * 5_000_000)  # a runaway write: 5 MB, one line
    _register(state, "too-long", b"/" + b"a" * 300 + b"\n")  # a name no file system takes
    _register(state, "relative", b"logs/somewhere\n")

    for args in (["status"], ["status", "--json"]):
        done = hpcrepro(*args, env=env, check=False)
        # exit 1: the sample campaigns lost run 2 (void), which `resume` must replace
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        if args[-1] == "--json":
            assert [c["campaign"] for c in json.loads(done.stdout)] == ["good", "zz-good"]
        else:
            assert "good  (local" in done.stdout and "zz-good  (local" in done.stdout
        warnings = done.stderr.splitlines()
        assert len(warnings) == 7 and all(w.startswith("warning: campaign ") for w in warnings)
        assert len(done.stderr) < 7 * 600, "a warning quoted too much of a damaged file"
        by_name = {w.split()[2]: w for w in warnings}
        assert (
            "bad-shape/campaign.json: damaged manifest: stages[1].kind is missing"
            in (by_name["bad-shape"])
        )
        assert (
            "campaign.json: cannot read it (a folder, not a regular file)"
            in (by_name["folder-manifest"])
        )
        for name, what in (
            ("a-dir", "is not a plain file"),
            ("binary", "is not UTF-8 text"),
            ("long", "is longer than a folder path"),
            ("too-long", "names a folder that cannot be reached"),
            ("relative", "does not hold one absolute folder path"),
        ):
            assert f"{state / 'campaigns' / name}: campaign index entry {what}" in by_name[name]


@pytest.mark.parametrize("how", ["name", "folder", "json"])
def test_status_of_one_damaged_campaign_exits_2_naming_file_and_field(
    tmp_path: Path, how: str
) -> None:
    env = _env(tmp_path)
    data = sample_manifest("broken")
    data["stages"][2]["jobs"][0]["start"] = 1700000000
    path = _write(tmp_path / "broken", data)
    _register(tmp_path / "state", "broken", f"{tmp_path / 'broken'}\n".encode())
    target = str(tmp_path / "broken") if how == "folder" else "broken"
    done = hpcrepro("status", target, *(["--json"] if how == "json" else []), env=env, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{path}: damaged manifest: stages[2].jobs[0].start should be a text" in done.stderr


def test_status_of_a_damaged_index_entry_by_name_exits_2(tmp_path: Path) -> None:
    entry = _register(tmp_path / "state", "mangled", b"\x00\xff" * 10)
    done = hpcrepro("status", "mangled", env=_env(tmp_path), check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{entry}: campaign index entry is not UTF-8 text" in done.stderr


def _with_verdicts(verdicts: Any) -> bytes:
    data = sample_manifest()
    data["stages"][1]["verdicts"] = verdicts
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (_with_verdicts({"x": {"verdict": "void"}}), "damaged manifest: stages[1].verdicts['x']"),
        (_with_verdicts([{"verdict": "void"}]), "damaged manifest: stages[1].verdicts should be"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply to read"),
    ],
)
def test_collect_of_a_campaign_with_a_damaged_manifest_exits_2(
    tmp_path: Path, content: bytes, what: str
) -> None:
    path = tmp_path / "camp" / "campaign.json"
    path.parent.mkdir()
    path.write_bytes(content)
    done = hpcrepro(
        "collect", str(path.parent), "--no-official-check", env=_env(tmp_path), check=False
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{path}: {what}" in done.stderr and len(done.stderr) < 1000


def test_collect_leaves_out_the_logs_of_void_and_never_run_runs(tmp_path: Path) -> None:
    """The verdict names collect skips are the ones the campaign writes (verdict.VOID, NOT_RUN)."""
    from hpcrepro.campaign import verdict
    from hpcrepro.campaign.collect import not_counted
    from hpcrepro.results.inputs import resolve

    data = sample_manifest()
    data["stages"][1]["verdicts"]["1"]["verdict"] = verdict.NOT_RUN
    data["stages"][2]["verdicts"]["2"]["verdict"] = verdict.VOID
    _write(tmp_path, data)
    for index in (1, 2, 3):
        (tmp_path / f"run-{index:02d}.log").write_text(":::MLLOG {}\n")
    inputs = resolve(tmp_path, "r2.1", None, None, exclude=not_counted)
    assert sorted(path.name for path, _ in inputs.excluded) == ["run-01.log", "run-02.log"]
    assert [path.name for path in inputs.logs] == ["run-03.log"]
