"""Closest NVIDIA config and the derived system YAML, against the shipped catalog and the RCP
data of the installed mlperf-logging."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from hpcrepro.detect.closest import (
    catalog_gpu_model,
    derive_system,
    gpu_family,
    rcp_points,
    system_name_for,
    write_system_yaml,
)
from hpcrepro.detect.model import NodeDescription, load_description
from hpcrepro.errors import UserError

DATA = Path(__file__).parent / "data" / "detect"


@pytest.fixture(scope="module")
def load_catalog():
    """The catalog loader, imported when a test needs it (it brings pydantic)."""
    from hpcrepro.catalog import load_catalog

    return load_catalog


@pytest.fixture(scope="module")
def catalog(load_catalog):
    return load_catalog()


def _node(name: str) -> NodeDescription:
    return load_description(DATA / name)


def _a30_node(count: int) -> NodeDescription:
    node = _node("l40s_4gpu_handwritten.json")
    template = node.gpus[0]
    node.gpus = []
    for index in range(count):
        gpu = copy.deepcopy(template)
        gpu.index, gpu.name, gpu.memory_total_mib, gpu.compute_capability = (
            index,
            "NVIDIA A30",
            24062,
            "8.0",
        )
        node.gpus.append(gpu)
    return node


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H200", "H200"),
        ("H200-SXM5-141GB", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("A30-24GB", "A30"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA H100 PCIe", "H100"),
    ],
)
def test_gpu_family(name: str, family: str) -> None:
    assert gpu_family(name) == family


def test_catalog_spelling_of_detected_gpus() -> None:
    assert catalog_gpu_model(_node("h200_8gpu_handwritten.json")) == "H200-141GB"
    assert catalog_gpu_model(_node("h100pcie_2gpu_handwritten.json")) == "H100-PCIE-80GB"
    assert catalog_gpu_model(_node("l40s_4gpu_handwritten.json")) == "L40S-48GB"


def test_rcp_points_come_from_the_installed_package() -> None:
    text = (
        resources.files("mlperf_logging") / "rcp_checker/training_4.0.0/rcps_resnet.json"
    ).read_text()
    expected = sorted({record["BS"] for record in json.loads(text).values()})
    points = rcp_points("4.0.0")
    assert points.batch_sizes == expected
    assert points.batch_sizes[0] == 1632 and points.batch_sizes[-1] == 67840
    with pytest.raises(UserError, match=r"no ResNet RCP data for ruleset 9\.9\.9"):
        rcp_points("9.9.9")


def test_one_h200_node_is_nvidias_h200_config(catalog) -> None:
    derived = derive_system(catalog, _node("h200_8gpu_handwritten.json"), 1, "site_1x8")
    assert derived.base.system == "h200_1x8"
    block = derived.data["versions"]["r4.0"]
    base = catalog.get("h200_1x8", "r4.0")
    assert (block["batch_per_gpu"], block["hparams"]["LR"], block["dgxsystem"]) == (
        400,
        11.0,
        "DGXH100",
    )
    assert block["hparams"]["WD"] == "5.0e-05"
    assert block["env"] == base.env and block["derived_from"] == "h200_1x8 r4.0"
    assert block["minutes_per_run"] == base.minutes_per_run


def test_two_h200_nodes_keep_the_global_batch(catalog) -> None:
    derived = derive_system(catalog, _node("h200_8gpu_handwritten.json"), 2, "site_2x8")
    block = derived.data["versions"]["r4.0"]
    assert (block["nodes"], block["batch_per_gpu"], block["hparams"]["LR"]) == (2, 200, 11.0)
    assert "global batch 3200 kept" in block["note"]


def test_three_h200_nodes_move_to_the_nearest_count(catalog) -> None:
    """24 GPUs: the 4x8 H100 config (32 GPUs) is nearer than the 1x8 H200 one; 3200 does not divide
    by 24, so 133 per GPU (3192, between RCP points 1632 and 3264) with LR scaled by sqrt."""
    derived = derive_system(catalog, _node("h200_8gpu_handwritten.json"), 3, "site_3x8")
    assert derived.base.system == "dgxh100_4x8"
    assert "same architecture (Hopper)" in derived.base.reason
    for key in catalog.systems["dgxh100_4x8"].versions:
        block = derived.data["versions"][key]
        assert block["batch_per_gpu"] == 133
        assert block["hparams"]["LR"] == pytest.approx(10.7 * (3192 / 3200) ** 0.5, abs=1e-3)
        assert "between RCP points 1632 and 3264" in block["note"]


def test_a30_node_caps_the_batch_by_memory(catalog) -> None:
    """8 A30 (24 GB): nearest count is DGX A100 1x8 (408 per GPU), but 24 GB GPUs never ran more
    than 204 (a30_1x2), so 204 per GPU: global batch 1632, exactly an RCP point."""
    derived = derive_system(catalog, _a30_node(8), 1, "a30_1x8")
    assert derived.base.system == "dgxa100_1x8"
    for block in derived.data["versions"].values():
        assert (block["batch_per_gpu"], block["nodes"] * block["gpus_per_node"] * 204) == (
            204,
            1632,
        )
        assert "an RCP point" in block["note"]
        assert block["hparams"]["LR"] == pytest.approx(10.5 * 0.5**0.5, abs=1e-3)


def test_small_node_below_the_rcp_range_says_so(catalog) -> None:
    derived = derive_system(catalog, _node("h100pcie_2gpu_handwritten.json"), 1, "ws")
    assert derived.base.system == "dgxh100_1x8"
    block = derived.data["versions"]["r4.0"]
    assert block["batch_per_gpu"] == 408
    assert "below every RCP" in block["note"]
    assert block["minutes_per_run"] == 4 * catalog.get("dgxh100_1x8", "r4.0").minutes_per_run


GPU_FIXTURES = sorted(
    p.name
    for p in DATA.glob("*.json")
    if not isinstance(json.loads(p.read_text()), list) and json.loads(p.read_text())["gpus"]
)


@pytest.mark.parametrize("fixture", GPU_FIXTURES)
@pytest.mark.parametrize("nodes", [1, 2, 5, 16])
def test_every_fixture_derives_a_loadable_system(
    catalog, load_catalog, tmp_path: Path, fixture: str, nodes: int
) -> None:
    """Any capture (hand-written or real) gives a system that loads, with its batch on or inside
    the RCP range or a note that says it is not."""
    node = _node(fixture)
    path = tmp_path / f"derived_{nodes}.yaml"
    write_system_yaml(path, derive_system(catalog, node, nodes, path.stem))
    entry = load_catalog(tmp_path).entry(path.stem)
    for version in entry.versions.values():
        assert version.nodes == nodes and version.gpus_per_node == node.gpu_count
        points = rcp_points(version.ruleset)
        assert version.global_batch <= points.batch_sizes[-1]
        if version.global_batch < points.batch_sizes[0]:
            assert "below every RCP" in (version.note or "")


def test_written_yaml_loads_in_the_catalog(catalog, load_catalog, tmp_path: Path) -> None:
    path = tmp_path / "systems" / "mycluster_3x8.yaml"
    derived = derive_system(catalog, _node("h200_8gpu_handwritten.json"), 3, system_name_for(path))
    write_system_yaml(path, derived)
    loaded = load_catalog(path.parent)
    entry = loaded.entry("mycluster_3x8")
    assert entry.gpu_model == "H200-141GB"
    for key, block in derived.data["versions"].items():
        version = loaded.get("mycluster_3x8", key)
        assert version.provenance == "derived" and version.derived_from == f"dgxh100_4x8 {key}"
        assert version.global_batch == 3192 and block["hparams"]["LR"] == version.hparams.LR
        assert version.env == catalog.get("dgxh100_4x8", key).env
    beside_shipped = load_catalog(extra=[path.parent])  # as $HPCREPRO_SYSTEMS adds it
    assert beside_shipped.get("mycluster_3x8", "r3.0").env == catalog.get("dgxh100_4x8", "r3.0").env
    assert "dgxh100_4x8" in beside_shipped.systems
    text = path.read_text()
    assert text.startswith("# Derived by `hpcrepro detect --write-system`")
    assert yaml.safe_load(text)["system"] == "mycluster_3x8"


def test_refusals(catalog) -> None:
    node = _node("h200_8gpu_handwritten.json")
    with pytest.raises(UserError, match="above 67840"):
        derive_system(catalog, node, 9000, "huge")
    cpu_only = copy.deepcopy(node)
    cpu_only.gpus = []
    with pytest.raises(UserError, match="has no GPU"):
        derive_system(catalog, cpu_only, 1, "x")
    mixed = copy.deepcopy(node)
    mixed.gpus[1].name = "NVIDIA H100 80GB HBM3"
    with pytest.raises(UserError, match="mixes GPU models"):
        derive_system(catalog, mixed, 1, "x")
    old = copy.deepcopy(node)
    for gpu in old.gpus:
        gpu.name, gpu.compute_capability = "Tesla V100-SXM2-32GB", "7.0"
    with pytest.raises(UserError) as caught:
        derive_system(catalog, old, 1, "x")
    assert "no NVIDIA config in the catalog for Tesla V100" in caught.value.message
    assert "A100" in (caught.value.hint or "") and "H200" in (caught.value.hint or "")


@pytest.mark.parametrize("name", ["sys.yml", "_hidden.yaml", "bad name.yaml"])
def test_bad_system_file_names(name: str) -> None:
    with pytest.raises(UserError) as caught:
        system_name_for(Path("systems") / name)
    assert caught.value.where == "--write-system"
