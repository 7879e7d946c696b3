"""Find what differs between nodes that should be identical (one allocation, one partition).

Each node is reduced to a flat fingerprint of the facts that matter for a run; values that move
on their own are left out (the current PCIe generation drops at idle to save power, clocks and
the capture time change) and memory counts as equal within 1% (the kernel reserves a few MiB
differently per boot and firmware).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hpcrepro.detect.model import NodeDescription

Fingerprint = dict[str, str]

# Facts compared with a relative tolerance instead of exactly.
_TOLERANCE = {"memory_gib": 0.01}
# Node lists longer than this are compressed like Slurm's ('gpu[001-128]') and then cut short.
NAMES_SHOWN = 8


Span = tuple[str, int, int, int]  # (prefix, digit count, first number, last number); -1: no digits


def _spans(names: Sequence[str]) -> list[Span]:
    """Runs of consecutive numbers per (prefix, digit count), groups in order of appearance."""
    groups: dict[tuple[str, int], set[int]] = {}
    for name in names:
        match = re.fullmatch(r"(.*?)(\d+)", name)
        key = (match.group(1), len(match.group(2))) if match else (name, -1)
        groups.setdefault(key, set()).add(int(match.group(2)) if match else 0)
    spans: list[Span] = []
    for (prefix, width), numbers in groups.items():
        run: list[int] = []
        for number in sorted(numbers):
            if run and number != run[1] + 1:
                spans.append((prefix, width, run[0], run[1]))
                run = []
            run = [run[0] if run else number, number]
        spans.append((prefix, width, run[0], run[1]))
    return spans


def _render(spans: Sequence[Span]) -> str:
    by_group: dict[tuple[str, int], list[str]] = {}
    for prefix, width, low, high in spans:
        text = (
            "" if width < 0 else f"{low:0{width}d}" + (f"-{high:0{width}d}" if high > low else "")
        )
        by_group.setdefault((prefix, width), []).append(text)
    parts = []
    for (prefix, width), texts in by_group.items():
        single = width < 0 or (len(texts) == 1 and "-" not in texts[0])
        parts.append(prefix + texts[0] if single else f"{prefix}[{','.join(texts)}]")
    return ",".join(parts)


def name_list(names: Sequence[str]) -> str:
    """A few names as they are; many as a Slurm-style host list ('gpu[001-096,101]') of at most
    NAMES_SHOWN ranges, then how many nodes are left out."""
    if len(names) <= NAMES_SHOWN:
        return ", ".join(names)
    spans = _spans(names)
    shown = _render(spans[:NAMES_SHOWN])
    rest = sum(high - low + 1 for _, _, low, high in spans[NAMES_SHOWN:])
    return shown + (f" and {rest} more" if rest else "")


def fingerprint(node: NodeDescription) -> Fingerprint:
    facts: Fingerprint = {
        "cpu.model": str(node.cpu.model),
        "cpu.sockets": str(node.cpu.sockets),
        "cpu.cores": str(node.cpu.cores),
        "cpu.threads": str(node.cpu.threads),
        "memory_gib": "None" if node.memory_bytes is None else f"{node.memory_bytes / 1024**3:.1f}",
        "os": str(node.os_name),
        "kernel": str(node.kernel),
        "slurm": str(node.slurm_version),
        "nvml": "available" if node.nvml.available else str(node.nvml.notice),
        "driver": str(node.nvml.driver_version),
        "cuda": str(node.nvml.cuda_driver_version),
        "gpu.count": str(len(node.gpus)),
        "ib.devices": ",".join(device.name for device in node.infiniband) or "none",
    }
    for gpu in node.gpus:
        key = f"gpu{gpu.index}"
        facts[f"{key}.model"] = gpu.name
        facts[f"{key}.memory_mib"] = str(gpu.memory_total_mib)
        facts[f"{key}.power_limit_w"] = str(gpu.power_limit_w)
        facts[f"{key}.pcie"] = (
            f"gen{gpu.pcie_gen_max} x{gpu.pcie_width_current}/x{gpu.pcie_width_max}"
        )
        facts[f"{key}.mig"] = str(gpu.mig_enabled)
        facts[f"{key}.ecc"] = str(gpu.ecc_enabled)
        facts[f"{key}.nvlinks"] = str(len(gpu.nvlinks))
    for device in node.infiniband:
        for port in device.ports:
            facts[f"ib.{device.name}.{port.port}"] = f"{port.state} {port.rate} {port.link_layer}"
    return facts


@dataclass
class Difference:
    """One fact with more than one value; `groups` maps each value to the nodes that have it,
    the most common value first (on a tie, the value of the earlier node)."""

    key: str
    groups: list[tuple[str, list[str]]]

    def text(self) -> str:
        parts = [f"{value} on {name_list(hosts)}" for value, hosts in self.groups]
        return f"{self.key}: " + "; ".join(parts)


def _same(key: str, first: str, second: str) -> bool:
    tolerance = _TOLERANCE.get(key)
    if tolerance is None or first == second:
        return first == second
    try:
        a, b = float(first), float(second)
    except ValueError:
        return False
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def differences(nodes: Sequence[NodeDescription]) -> list[Difference]:
    """Every fact whose value is not the same on all nodes (a fact missing on a node counts)."""
    prints = [(node.label, fingerprint(node)) for node in nodes]
    keys: list[str] = []
    for _, facts in prints:
        keys.extend(key for key in facts if key not in keys)
    found = []
    for key in keys:
        groups: list[tuple[str, list[str]]] = []
        for label, facts in prints:
            value = facts.get(key, "missing")
            group = next((g for g in groups if _same(key, g[0], value)), None)
            if group is None:
                groups.append((value, [label]))
            else:
                group[1].append(label)
        if len(groups) > 1:
            groups.sort(key=lambda group: -len(group[1]))  # stable: ties keep node order
            found.append(Difference(key, groups))
    return found


def most_common_node(nodes: Sequence[NodeDescription], found: Sequence[Difference]) -> int:
    """Index of the node that has the most common value in the most differing facts."""
    scores = [0] * len(nodes)
    labels = [node.label for node in nodes]
    for difference in found:
        for index, label in enumerate(labels):
            if label in difference.groups[0][1]:
                scores[index] += 1
    return max(range(len(nodes)), key=lambda index: (scores[index], -index))
