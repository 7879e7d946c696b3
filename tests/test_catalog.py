"""The system catalog: every shipped file against NVIDIA's real logs; errors for bad files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.catalog import VERSIONS, Catalog, load_catalog
from hpcrepro.errors import UserError
from hpcrepro.resources import systems_dir

DATA = Path(__file__).parent / "data" / "catalog"
# Copied from NVIDIA's result logs by tests/data/catalog/extract_mllog_facts.py.
MLLOG_FACTS = json.loads((DATA / "mllog_facts.json").read_text(encoding="utf-8"))

EXPECTED = {
    "r2.1": {
        "dgxa100_1x8",
        "dgxa100_8x8",
        "dgxa100_128x8",
        "dgxa100_527x8",
        "a30_1x2",
        "dgxh100_1x8",
        "dgxh100_4x8",
    },
    "r3.0": {
        "dgxh100_1x8",
        "dgxh100_4x8",
        "dgxh100_8x8",
        "dgxh100_64x8",
        "dgxh100_96x8",
        "dgxh100_448x8",
        "dgxa100_1x8",
        "dgxa100_8x8",
    },
    "r3.1": {"dgxh100_1x8", "dgxh100_8x8", "dgxh100_448x8"},
    "r4.0": {
        "dgxh100_1x8",
        "dgxh100_8x8",
        "dgxh100_316x8",
        "dgxh100_448x8",
        "h200_1x8",
        "l40s_2x4",
        "l40s_16x4",
    },
}

# Target epochs from the config comments / research notes section 6 (independent of the logs).
TARGET_EPOCH = {
    ("dgxa100_1x8", "r2.1"): 35,
    ("dgxa100_8x8", "r2.1"): 35,
    ("dgxa100_128x8", "r2.1"): 60,
    ("dgxa100_527x8", "r2.1"): 90,
    ("a30_1x2", "r2.1"): 35,
    ("dgxh100_1x8", "r2.1"): 35,
    ("dgxh100_4x8", "r2.1"): 35,
    ("dgxh100_8x8", "r3.0"): 35,
    ("dgxh100_64x8", "r3.0"): 50,
    ("dgxh100_96x8", "r3.0"): 56,
    ("dgxh100_448x8", "r3.0"): 77,
    ("dgxh100_316x8", "r4.0"): 70,
    ("dgxa100_1x8", "r3.0"): 36,
    ("dgxa100_8x8", "r3.0"): 35,
    ("l40s_2x4", "r4.0"): 35,
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(systems_dir(), extra=[])


def run_cli(*args: str, extra_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("HPCREPRO_SYSTEMS", None)
    if extra_dir is not None:
        env["HPCREPRO_SYSTEMS"] = str(extra_dir)
    return subprocess.run(
        [sys.executable, "-m", "hpcrepro", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def entries(catalog: Catalog):
    for name, entry in catalog.systems.items():
        for version, item in entry.versions.items():
            yield name, version, item


# --- the shipped catalog ---------------------------------------------------------------------


def test_every_file_loads_and_is_named_after_its_system(catalog: Catalog) -> None:
    files = sorted(p.stem for p in systems_dir().glob("*.yaml") if p.name != "_common.yaml")
    assert sorted(catalog.systems) == files
    assert all(catalog.systems[name].system == name for name in files)


def test_coverage_per_version(catalog: Catalog) -> None:
    for version in VERSIONS:
        found = {name for name, ver, _ in entries(catalog) if ver == version}
        assert found == EXPECTED[version], version


@pytest.mark.parametrize("fact", MLLOG_FACTS, ids=lambda f: f"{f['version']}-{f['result_dir']}")
def test_published_entries_match_nvidia_logs(catalog: Catalog, fact: dict) -> None:
    matches = [
        item
        for _, ver, item in entries(catalog)
        if ver == fact["version"]
        and item.published
        and item.published.result_dir == fact["result_dir"]
    ]
    assert len(matches) == 1, "every NVIDIA result directory has exactly one catalog entry"
    item = matches[0]
    hp = item.hparams
    assert item.provenance == "published"
    assert item.global_batch == fact["global_batch_size"]
    assert item.batch_per_gpu * (hp.BN_GROUP or 1) == fact["model_bn_span"]
    assert fact["lars_opt_base_learning_rate"] == hp.LR
    assert fact["lars_opt_weight_decay"] == hp.WD
    assert fact["lars_opt_momentum"] == hp.MOM
    assert fact["lars_opt_learning_rate_warmup_epochs"] == hp.WARMUP_EPOCHS
    assert fact["lars_opt_learning_rate_decay_steps"] == hp.NUMEPOCHS
    seen = fact["eval_epochs_seen"]
    assert item.eval_epochs()[: len(seen)] == seen
    assert item.published.score_minutes == round(fact["score_minutes"], 3)


def test_target_epochs_match_nvidia_tables(catalog: Catalog) -> None:
    for (name, version), epoch in TARGET_EPOCH.items():
        assert catalog.get(name, version).target_epoch() == epoch, (name, version)
    assert catalog.get("dgxh100_64x8", "r3.0").eval_epochs()[:3] == [2, 6, 10]


def test_derived_a100_entries_for_r30(catalog: Catalog) -> None:
    """NVIDIA's v2.1 files run with the r3.0 code; the 1x8 takes the partner copies' EVAL_OFFSET
    3 (the 8x8 partner copies keep 2). tests/test_catalog_nvidia.py compares every export."""
    for name, eval_offset in (("dgxa100_1x8", 3), ("dgxa100_8x8", 2)):
        derived, original = catalog.get(name, "r3.0"), catalog.get(name, "r2.1")
        assert derived.provenance == "derived" and derived.published is None
        assert derived.derived_from and "training_results_v2.1" in derived.derived_from
        assert derived.note and "EVAL_OFFSET" in derived.note
        assert eval_offset == derived.hparams.EVAL_OFFSET
        assert (derived.implementation, derived.container_base, derived.ruleset) == (
            "mxnet",
            "nvcr.io/nvidia/mxnet:23.04-py3",
            "3.0.0",
        )
        others = {"EVAL_OFFSET"}
        assert derived.hparams.model_dump(exclude=others) == original.hparams.model_dump(
            exclude=others
        )
        assert derived.env == {
            k: v for k, v in original.env.items() if k != "MXNET_CUDNN_WARN_ON_IGNORED_FLAGS"
        }
        assert derived.global_batch == original.global_batch == 3264


def test_exports_keep_nvidia_text(catalog: Catalog) -> None:
    assert catalog.get("dgxh100_8x8", "r3.0").hparams.exports()["WD"] == "5.0e-05"
    assert catalog.get("dgxa100_128x8", "r2.1").hparams.exports()["WD"] == "0.000025"
    assert catalog.get("dgxh100_448x8", "r3.0").hparams.exports()["WD"] == "2.5e-5"
    exports = catalog.get("dgxh100_448x8", "r3.0").hparams.exports()
    assert exports["LR"] == "23.0" and exports["BN_GROUP"] == "2"
    assert "BN_GROUP" not in catalog.get("dgxh100_8x8", "r3.0").hparams.exports()
    changed = catalog.get("dgxh100_8x8", "r3.0").hparams.model_copy(update={"WD": 1e-4})
    assert changed.exports()["WD"] == "0.0001"
    assert catalog.get("dgxh100_8x8", "r3.0").env["OMPI_MCA_btl"] == "^openib"


def test_env_layers_common_under_system(catalog: Catalog) -> None:
    one = catalog.get("dgxh100_1x8", "r3.1")
    assert one.env["DALI_DONT_USE_MMAP"] == "1"  # the system overrides the common 0
    assert one.env["CUDNN_FORCE_KERNEL_INIT"] == "1"  # common layer of r3.1 only
    assert "CUDNN_FORCE_KERNEL_INIT" not in catalog.get("dgxh100_1x8", "r3.0").env
    origin = catalog.origin("dgxh100_1x8", "r3.1")
    assert origin["env.DALI_DONT_USE_MMAP"].startswith("systems/dgxh100_1x8.yaml:")
    assert origin["env.CUDNN_FORCE_KERNEL_INIT"].startswith("systems/_common.yaml:")


def test_common_layer_of_an_implementation_folder(catalog: Catalog) -> None:
    """r4.0's CoreWeave folder is the r3.0 code: its common file has no CUDNN_FORCE_KERNEL_INIT,
    which every other r4.0 folder's has."""
    assert "CUDNN_FORCE_KERNEL_INIT" not in catalog.get("dgxh100_448x8", "r4.0").env
    assert "CUDNN_FORCE_KERNEL_INIT" not in catalog.raw("dgxh100_448x8", "r4.0")["env"]
    assert "env.CUDNN_FORCE_KERNEL_INIT" not in catalog.origin("dgxh100_448x8", "r4.0")
    assert catalog.get("dgxh100_316x8", "r4.0").env["CUDNN_FORCE_KERNEL_INIT"] == "1"


def test_user_common_layers_apply_after_the_shipped_ones(tmp_path: Path) -> None:
    """A later folder wins, also over a shipped implementation block; a user's own folder name
    gets its own block."""
    text = base_text().replace("    implementation: mxnet\n", "    implementation: mine\n", 1)
    folder = user_folder(tmp_path, text)
    common = (
        "versions:\n"
        "  r4.0:\n"
        "    env:\n"
        '      CUDNN_FORCE_KERNEL_INIT: "0"\n'
        "  r3.0:\n"
        "    implementations:\n"
        "      mine:\n"
        "        unset: [DGXHT]\n"
        "        env:\n"
        '          DGXSOCKETCORES: "48"\n'
    )
    (folder / "_common.yaml").write_text(common, encoding="utf-8")
    own = load_catalog(systems_dir(), extra=[folder])
    assert own.get("dgxh100_448x8", "r4.0").env["CUDNN_FORCE_KERNEL_INIT"] == "0"
    mine = own.get("mysite_2x8", "r3.0")
    assert "DGXHT" not in mine.env and mine.env["DGXSOCKETCORES"] == "48"
    assert "DGXHT" in own.get("dgxh100_8x8", "r3.0").env
    assert own.origin("mysite_2x8", "r3.0")["env.DGXSOCKETCORES"].endswith("_common.yaml:10")
    assert own.raw("mysite_2x8", "r3.0")["env"]["DGXSOCKETCORES"] == "48"


def test_structured_values_never_in_env(catalog: Catalog) -> None:
    for _, _, item in entries(catalog):
        assert not {
            "DGXNNODES",
            "DGXNGPU",
            "BATCHSIZE",
            "DGXSYSTEM",
            "WALLTIME",
            "SBATCH_NETWORK",
        } & set(item.env)
        assert not set(item.hparams.exports()) & set(item.env)


def test_sharp_only_where_nvidia_exports_it(catalog: Catalog) -> None:
    sharp = {(n, v) for n, v, item in entries(catalog) if item.sbatch_network == "sharp"}
    assert sharp == {
        ("dgxa100_128x8", "r2.1"),
        ("dgxa100_527x8", "r2.1"),
        ("dgxh100_64x8", "r3.0"),
        ("dgxh100_96x8", "r3.0"),
        ("dgxh100_448x8", "r3.0"),
        ("dgxh100_448x8", "r3.1"),
        ("dgxh100_448x8", "r4.0"),
        ("dgxh100_316x8", "r4.0"),
        ("dgxh100_8x8", "r3.1"),
        ("dgxh100_8x8", "r4.0"),
    }


def test_quirks_are_kept(catalog: Catalog) -> None:
    l40s = catalog.get("l40s_2x4", "r4.0")
    assert (l40s.dgxsystem, l40s.batch_per_gpu, l40s.gpus_per_node) == ("L40S_2x4x204", 200, 4)
    assert catalog.get("h200_1x8", "r4.0").dgxsystem == "DGXH100"
    assert catalog.get("a30_1x2", "r2.1").gpus_per_node == 2
    walltime = catalog.get("dgxh100_448x8", "r3.0")
    assert (walltime.minutes_per_run, walltime.walltime_overhead_minutes) == (7, 25)


def test_origin_points_at_the_line_of_each_key(catalog: Catalog) -> None:
    name, version = "dgxh100_448x8", "r3.1"
    for dotted, where in catalog.origin(name, version).items():
        label, _, line = where.rpartition(":")
        text = (systems_dir() / Path(label).name).read_text().splitlines()[int(line) - 1]
        assert text.strip().startswith(dotted.split(".")[-1] + ":"), (dotted, where, text)


def test_raw_merges_common_env_and_validates_again(catalog: Catalog) -> None:
    from hpcrepro.catalog import SystemVersion

    raw = catalog.raw("dgxh100_8x8", "r3.0")
    assert raw["env"]["OMPI_MCA_btl"] == "^openib" and raw["hparams"]["WD"] == "5.0e-05"
    assert SystemVersion.model_validate(raw) == catalog.get("dgxh100_8x8", "r3.0")


# --- bad input -------------------------------------------------------------------------------


def user_folder(tmp_path: Path, text: str, name: str = "mysite_2x8") -> Path:
    folder = tmp_path / "mysystems"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def base_text() -> str:
    text = (systems_dir() / "dgxh100_8x8.yaml").read_text(encoding="utf-8")
    return text.replace("system: dgxh100_8x8", "system: mysite_2x8")


def load_error(folder: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_catalog(systems_dir(), extra=[folder])
    return caught.value.render()


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_unknown_key_names_file_line_and_valid_keys(tmp_path: Path) -> None:
    text = base_text().replace("    nodes: 8\n", "    nodes: 8\n    nodez: 2\n", 1)
    message = load_error(user_folder(tmp_path, text))
    assert f"mysite_2x8.yaml:{line_of(text, 'nodez')}" in message
    assert "unknown key 'nodez'" in message and "did you mean 'nodes'" in message
    assert "versions.r3.0.nodez" in message and "valid keys here:" in message


def test_unknown_hparam_lists_hyperparameters(tmp_path: Path) -> None:
    text = base_text().replace("      LR: 11.0\n", "      LR: 11.0\n      LRR: 2\n", 1)
    message = load_error(user_folder(tmp_path, text))
    assert f":{line_of(text, 'LRR')}" in message and "did you mean 'LR'" in message


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    text = base_text().replace("    batch_per_gpu: 50", "    batch_per_gpu: fifty", 1)
    message = load_error(user_folder(tmp_path, text))
    assert f"mysite_2x8.yaml:{line_of(text, 'fifty')}" in message
    assert "versions.r3.0.batch_per_gpu" in message and "'fifty'" in message


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    text = base_text().replace("    nodes: 8\n", "    nodes: 8\n    nodes: 16\n", 1)
    message = load_error(user_folder(tmp_path, text))
    assert f":{line_of(text, 'nodes: 16')}" in message and "given twice" in message


def test_file_name_must_match_system(tmp_path: Path) -> None:
    message = load_error(user_folder(tmp_path, base_text(), name="other_2x8"))
    assert "does not match the file name 'other_2x8.yaml'" in message
    assert "other_2x8.yaml:2" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('      DALI_THREADS: "8"', '      BAD-NAME: "8"', ["BAD-NAME", "not a valid environment"]),
        ('      DALI_THREADS: "8"', '      DGXNNODES: "8"', ["DGXNNODES", "comes from 'nodes'"]),
        ('      DALI_THREADS: "8"', '      LR: "8"', ["LR is a hyperparameter"]),
        ("  r3.0:", "  r3.2:", ["unknown version 'r3.2'", "r3.0"]),
        ("    provenance: published", "    provenance: guessed", ["provenance", "'guessed'"]),
        ('    ruleset: "3.0.0"', "    ruleset: 3.0", ["ruleset", "3.0.0"]),
        ("      EVAL_OFFSET: 2", "      EVAL_OFFSET: 40", ["EVAL_OFFSET 40 leaves no evaluation"]),
        ("    nodes: 8", "    nodes: 0", ["versions.r3.0.nodes", "greater than or equal to 1"]),
    ],
)
def test_bad_values_are_explained(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    text = base_text()
    assert old in text
    message = load_error(user_folder(tmp_path, text.replace(old, new, 1)))
    for part in expected:
        assert part in message, message


def test_version_keys_are_checked_with_their_line(tmp_path: Path) -> None:
    text = base_text().replace("  r3.1:", "  3.1:", 1)
    message = load_error(user_folder(tmp_path, text))
    assert f"mysite_2x8.yaml:{line_of(text, '  3.1:')}" in message
    assert "unknown version '3.1'" in message and "'r3.1'" in message


def test_missing_system_key_and_empty_versions(tmp_path: Path) -> None:
    message = load_error(user_folder(tmp_path, "title: t\ngpu_model: g\nversions: {}\n"))
    assert "required key 'system' is missing" in message and "system: mysite_2x8" in message
    text = "system: mysite_2x8\ntitle: t\ngpu_model: g\nversions: {}\n"
    assert "no versions" in load_error(user_folder(tmp_path, text))
    assert "must be a mapping" in load_error(user_folder(tmp_path, "- just a list\n"))


@pytest.mark.parametrize(
    ("common", "expected"),
    [
        ("versions:\n  r3.0:\n    envv: {}\n", ["_common.yaml:3", "did you mean 'env'"]),
        ("versions:\n  r9.0:\n    env: {}\n", ["_common.yaml:2", "unknown version 'r9.0'"]),
        ('versions:\n  r3.0:\n    env:\n      DGXNGPU: "4"\n', ["DGXNGPU", "gpus_per_node"]),
        ("- a\n", ["_common.yaml", "must be a mapping"]),
        (
            "versions:\n  r3.0:\n    implementations:\n      mxnett:\n        unset: [DGXHT]\n",
            ["_common.yaml:4", "no r3.0 system runs implementation 'mxnett'", "'mxnet'"],
        ),
        (
            "versions:\n  r3.0:\n    implementations:\n      mxnet:\n        unset: [DGXHTT]\n",
            ["_common.yaml:5", "unset DGXHTT: the r3.0 common env does not set it", "DGXHT"],
        ),
        (
            "versions:\n  r3.0:\n    implementations:\n      mxnet:\n        envv: {}\n",
            ["_common.yaml:5", "did you mean 'env'", "valid keys here: env, unset"],
        ),
    ],
)
def test_bad_common_file(tmp_path: Path, common: str, expected: list[str]) -> None:
    folder = user_folder(tmp_path, base_text())
    (folder / "_common.yaml").write_text(common, encoding="utf-8")
    message = load_error(folder)
    for part in expected:
        assert part in message, message


def test_derived_entry_needs_derived_from(tmp_path: Path) -> None:
    text = base_text().replace("provenance: published", "provenance: derived", 1)
    assert "needs 'derived_from'" in load_error(user_folder(tmp_path, text))


def test_yml_files_are_not_silently_ignored(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, base_text())
    (folder / "mysite_2x8.yaml").rename(folder / "mysite_2x8.yml")
    assert "rename it to mysite_2x8.yaml" in load_error(folder)


def test_unknown_system_and_version_list_what_exists(catalog: Catalog) -> None:
    with pytest.raises(UserError) as caught:
        catalog.get("dgxh100_8x4", "r3.0")
    assert "did you mean 'dgxh100_8x8'" in caught.value.render()
    with pytest.raises(UserError) as caught:
        catalog.get("dgxh100_8x8", "r2.1")
    assert "versions of dgxh100_8x8: r3.0, r3.1, r4.0" in caught.value.render()


# --- a user's own folder and the CLI ---------------------------------------------------------


def test_user_folder_adds_systems_and_overrides_common(tmp_path: Path) -> None:
    folder = user_folder(tmp_path, base_text())
    (folder / "_common.yaml").write_text(
        'versions:\n  r3.0:\n    env:\n      DGXSOCKETCORES: "56"\n', encoding="utf-8"
    )
    own = load_catalog(systems_dir(), extra=[folder])
    assert own.get("mysite_2x8", "r3.0").env["DGXSOCKETCORES"] == "56"
    assert own.get("dgxh100_8x8", "r3.0").env["DGXSOCKETCORES"] == "56"
    nodes_line = line_of(base_text(), "    nodes: 8")
    assert own.origin("mysite_2x8", "r3.0")["nodes"] == f"{folder / 'mysite_2x8.yaml'}:{nodes_line}"
    assert own.origin("mysite_2x8", "r3.0")["env.DGXSOCKETCORES"].endswith("_common.yaml:4")


def test_user_folder_replaces_a_shipped_system(tmp_path: Path) -> None:
    text = (systems_dir() / "dgxh100_8x8.yaml").read_text(encoding="utf-8")
    text = text.replace("    nodes: 8\n", "    nodes: 6\n", 1)
    folder = user_folder(tmp_path, text, name="dgxh100_8x8")
    own = load_catalog(systems_dir(), extra=[folder])
    assert own.get("dgxh100_8x8", "r3.0").nodes == 6
    assert own.origin("dgxh100_8x8", "r3.0")["nodes"].startswith(str(folder))
    assert load_catalog(systems_dir(), extra=[]).get("dgxh100_8x8", "r3.0").nodes == 8


def test_cli_table_and_json(tmp_path: Path) -> None:
    table = run_cli("systems")
    assert table.returncode == 0, table.stderr
    assert "dgxh100_448x8" in table.stdout and "57344" in table.stdout and "derived" in table.stdout
    listed = run_cli("systems", "--version", "r3.0", "--json")
    rows = json.loads(listed.stdout)
    assert {row["system"] for row in rows} == EXPECTED["r3.0"]
    row = next(r for r in rows if r["system"] == "dgxh100_8x8")
    assert row["global_batch"] == 3200 and row["published_score_minutes"] == 2.664
    own = run_cli("systems", "--json", extra_dir=user_folder(tmp_path, base_text()))
    assert "mysite_2x8" in {r["system"] for r in json.loads(own.stdout)}


def test_cli_show() -> None:
    shown = run_cli("systems", "show", "dgxa100_8x8")
    assert shown.returncode == 0, shown.stderr
    assert "derived" in shown.stdout and "target epoch 35" in shown.stdout
    assert "OMPI_MCA_btl=^openib" in shown.stdout and "_common.yaml:" in shown.stdout
    data = json.loads(
        run_cli("systems", "show", "dgxh100_8x8", "--version", "r3.0", "--json").stdout
    )
    version = data["versions"]["r3.0"]
    assert version["hparams"]["WD"] == "5.0e-05" and version["target_epoch"] == 35
    assert version["env"]["DALI_HW_DECODER_LOAD"] == "0.8" and version["global_batch"] == 3200


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["systems", "show", "dgxa100_8x4"], ["unknown system 'dgxa100_8x4'", "dgxa100_8x8"]),
        (
            ["systems", "show", "dgxa100_8x8", "--version", "r3.1"],
            ["versions of dgxa100_8x8: r2.1, r3.0"],
        ),
        (["systems", "--version", "3.0"], ["unknown version '3.0'", "r3.0"]),
    ],
)
def test_cli_bad_names_exit_2(args: list[str], expected: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    for part in expected:
        assert part in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_user_file_exits_2_with_location(tmp_path: Path) -> None:
    text = base_text().replace("    nodes: 8\n", "    nodez: 8\n", 1)
    result = run_cli("systems", extra_dir=user_folder(tmp_path, text))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"mysite_2x8.yaml:{line_of(text, 'nodez')}" in result.stderr
    assert "unknown key 'nodez'" in result.stderr
    missing = run_cli("systems", extra_dir=tmp_path / "nowhere")
    assert missing.returncode == 2 and "HPCREPRO_SYSTEMS" in missing.stderr


def test_shipped_files_are_untouched_by_user_folder(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(systems_dir(), copy)
    assert sorted(load_catalog(copy).systems) == sorted(
        load_catalog(systems_dir(), extra=[]).systems
    )
