"""Nodes that should be identical: report each fact that differs, with the nodes on each side."""

from __future__ import annotations

import copy
from pathlib import Path

from hpcrepro.detect.compare import differences, most_common_node
from hpcrepro.detect.model import load_description, load_descriptions

DATA = Path(__file__).parent / "data" / "detect"


def test_three_nodes_with_a_bad_one() -> None:
    nodes = load_descriptions(DATA / "h200_3nodes_handwritten.json")
    found = [d.text() for d in differences(nodes)]
    assert found == [
        "driver: 550.54.15 on h200-node001, h200-node003; 535.161.08 on h200-node002",
        "gpu3.nvlinks: 18 on h200-node001, h200-node003; 16 on h200-node002",
        "ib.mlx5_5.1: ACTIVE 400 Gb/sec (4X NDR) InfiniBand on h200-node001, h200-node003; "
        "DOWN 400 Gb/sec (4X NDR) InfiniBand on h200-node002",
    ]


def test_noise_is_not_a_difference() -> None:
    """Idle PCIe downclocking, a few MiB of memory, capture time, hostname: not differences."""
    first = load_description(DATA / "h200_8gpu_handwritten.json")
    second = copy.deepcopy(first)
    second.hostname, second.captured_at = "h200-node009", "2026-11-28T18:00:00+00:00"
    second.memory_bytes = (second.memory_bytes or 0) + 20 * 1024**2
    second.gpus[4].pcie_gen_current = 5
    assert differences([first, second]) == []


def test_missing_gpu_shows_as_missing() -> None:
    first = load_description(DATA / "h200_8gpu_handwritten.json")
    second = copy.deepcopy(first)
    second.hostname = "h200-node002"
    del second.gpus[7]
    found = {d.key: d.text() for d in differences([first, second])}
    assert found["gpu.count"] == "gpu.count: 8 on h200-node001; 7 on h200-node002"
    assert found["gpu7.model"] == "gpu7.model: NVIDIA H200 on h200-node001; missing on h200-node002"


def test_memory_within_one_percent_is_alike_beyond_it_differs() -> None:
    first = load_description(DATA / "h200_8gpu_handwritten.json")
    nodes = []
    for index, gib in enumerate((2015.6, 2015.4, 2013.0, 1007.8)):
        node = copy.deepcopy(first)
        node.hostname, node.memory_bytes = f"n{index}", int(gib * 1024**3)
        nodes.append(node)
    (found,) = differences(nodes)
    assert found.text() == "memory_gib: 2015.6 on n0, n1, n2; 1007.8 on n3"


def test_most_common_node_is_the_reference() -> None:
    nodes = load_descriptions(DATA / "h200_3nodes_handwritten.json")
    nodes = [nodes[1], nodes[0], nodes[2]]  # the odd node first
    assert nodes[most_common_node(nodes, differences(nodes))].hostname == "h200-node001"


def test_long_node_lists_are_compressed_and_cut_short() -> None:
    from hpcrepro.detect.compare import name_list

    assert name_list(["h200-node001", "h200-node003"]) == "h200-node001, h200-node003"
    assert name_list([f"n{i:04d}" for i in range(1000)]) == "n[0000-0999]"
    assert name_list([f"gpu{i:03d}" for i in (*range(1, 97), 101, 7)]) == "gpu[001-096,101]"
    assert (
        name_list([f"n{i:04d}" for i in range(0, 1000, 2)])
        == "n[0000,0002,0004,0006,0008,0010,0012,0014] and 492 more"
    )
    mixed = ["gpu1", "gpu2", "gpu3", "gpu10", "gpu11", "login", "gpu5", "x01", "x02", "x03"]
    assert name_list(mixed) == "gpu[1-3,5],gpu[10-11],login,x[01-03]"
    assert name_list([chr(ord("a") + i) for i in range(10)]) == "a,b,c,d,e,f,g,h and 2 more"


def test_a_difference_over_many_nodes_stays_one_short_line() -> None:
    base = load_description(DATA / "h200_8gpu_handwritten.json")
    nodes = []
    for i in range(300):
        node = copy.deepcopy(base)
        node.hostname = f"gpu{i:03d}"
        if i == 7:
            node.nvml.driver_version = "535.161.08"
        nodes.append(node)
    (found,) = differences(nodes)
    assert found.text() == (
        f"driver: {base.nvml.driver_version} on gpu[000-006,008-299]; 535.161.08 on gpu007"
    )
