"""NodeDescription JSON round-trip and strict loading of captured descriptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcrepro.detect.model import (
    MAX_GPUS_PER_NODE,
    SCHEMA,
    NodeDescription,
    load_description,
    load_descriptions,
)
from hpcrepro.errors import UserError

DATA = Path(__file__).parent / "data" / "detect"
FIXTURES = sorted(DATA.glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixtures_round_trip_exactly(path: Path) -> None:
    nodes = load_descriptions(path)
    raw = json.loads(path.read_text())
    raw_list = raw if isinstance(raw, list) else [raw]
    assert [node.to_dict() for node in nodes] == raw_list
    for node in nodes:
        assert NodeDescription.from_dict(json.loads(node.to_json())) == node


def test_fixture_facts_are_typed() -> None:
    node = load_description(DATA / "h200_8gpu_handwritten.json")
    assert node.schema == SCHEMA
    assert node.gpu_count == 8 and node.gpu_name == "NVIDIA H200"
    assert all(len(gpu.nvlinks) == 18 for gpu in node.gpus)
    assert node.gpus[0].power_limit_w == 700.0 and isinstance(node.gpus[0].power_limit_w, float)
    assert node.cpu.caches[3].size_kib == 107520
    assert node.infiniband[0].ports[0].rate_gbps == 400.0


def _edited(path: Path, tmp_path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize(
    ("edit", "message", "where"),
    [
        (
            lambda d: d["gpus"][2].update(memory_total_mib="lots"),
            "expected int",
            "gpus.2.memory_total_mib",
        ),
        (lambda d: d["gpus"][0].update(colour="green"), "unknown key 'colour'", "gpus.0.colour"),
        (lambda d: d.pop("cpu"), "missing key 'cpu'", "edited.json"),
        (
            lambda d: d["gpus"][1]["nvlinks"][0].update(link=True),
            "expected int",
            "gpus.1.nvlinks.0.link",
        ),
        (lambda d: d.update(gpus={"0": {}}), "expected a list", "key 'gpus'"),
        (
            lambda d: d.update(schema="hpcrepro.node/9"),
            "unknown description schema",
            "key 'schema'",
        ),
        # values, not only types
        (
            lambda d: d["gpus"][3].update(memory_total_mib=-5),
            "must be between 1 and 16777216, got -5",
            "gpus.3.memory_total_mib",
        ),
        (lambda d: d["gpus"][0].update(name="  "), "must not be empty", "gpus.0.name"),
        (lambda d: d.update(hostname=""), "must not be empty", "key 'hostname'"),
        (lambda d: d["cpu"].update(sockets=-2), "between 1 and 64, got -2", "cpu.sockets"),
        (lambda d: d["cpu"].update(max_mhz=float("nan")), "expected a finite number", "max_mhz"),
        (
            lambda d: d["gpus"][1].update(power_limit_w=float("inf")),
            "expected a finite number, got inf",
            "gpus.1.power_limit_w",
        ),
        (lambda d: d["gpus"][0].update(pcie_width_max=0), "between 1 and 64", "pcie_width_max"),
        (
            lambda d: d["gpus"][0].update(compute_capability="9.0.1; x"),
            "expected a compute capability such as '9.0'",
            "gpus.0.compute_capability",
        ),
        (
            lambda d: d["cpu"]["caches"].append({"level": 2, "type": "Data", "size_kib": 0}),
            "between 1 and",
            "cpu.caches.4.size_kib",
        ),
        (
            lambda d: d.update(gpus=[dict(d["gpus"][0], index=i) for i in range(65)]),
            "65 GPUs in one node; the catalog takes at most 64 per node",
            "key 'gpus'",
        ),
    ],
)
def test_bad_description_names_the_key(tmp_path: Path, edit, message: str, where: str) -> None:
    path = _edited(DATA / "h200_8gpu_handwritten.json", tmp_path, edit)
    with pytest.raises(UserError) as caught:
        load_description(path)
    assert message in caught.value.message
    assert where in (caught.value.where or "")


def test_invalid_json_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "hostname": "a",\n  "cpu": {,\n}')
    with pytest.raises(UserError) as caught:
        load_descriptions(path)
    assert caught.value.where == f"{path}:3"


def test_missing_file_and_empty_list(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        load_descriptions(tmp_path / "nope.json")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(UserError, match="empty list"):
        load_descriptions(empty)


def test_list_entries_are_named_by_position(tmp_path: Path) -> None:
    path = _edited(DATA / "h200_3nodes_handwritten.json", tmp_path, lambda d: d[1].update(kernel=5))
    with pytest.raises(UserError) as caught:
        load_descriptions(path)
    assert "[1] key 'kernel'" in (caught.value.where or "")


def test_the_gpu_limit_is_the_catalogs() -> None:
    catalog = pytest.importorskip("hpcrepro.catalog")
    assert MAX_GPUS_PER_NODE == catalog.MAX_GPUS_PER_NODE


def test_a_link_that_is_down_may_read_zero(tmp_path: Path) -> None:
    path = _edited(
        DATA / "h200_8gpu_handwritten.json",
        tmp_path,
        lambda d: d["gpus"][0].update(pcie_gen_current=0, pcie_width_current=0),
    )
    assert load_description(path).gpus[0].pcie_width_current == 0
