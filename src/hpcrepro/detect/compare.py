"""Find what differs between nodes that should be identical (one allocation, one partition).

Each node is reduced to a flat fingerprint of the facts that matter for a run; values that move
on their own are left out (the current PCIe generation drops at idle to save power, clocks and
the capture time change) and memory is compared in whole GiB (the kernel reserves a few MiB
differently per boot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpcrepro.detect.model import NodeDescription

Fingerprint = dict[str, str]


def fingerprint(node: NodeDescription) -> Fingerprint:
    facts: Fingerprint = {
        "cpu.model": str(node.cpu.model),
        "cpu.sockets": str(node.cpu.sockets),
        "cpu.cores": str(node.cpu.cores),
        "cpu.threads": str(node.cpu.threads),
        "memory_gib": "None"
        if node.memory_bytes is None
        else str(round(node.memory_bytes / 1024**3)),
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
        parts = [f"{value} on {', '.join(hosts)}" for value, hosts in self.groups]
        return f"{self.key}: " + "; ".join(parts)


def differences(nodes: Sequence[NodeDescription]) -> list[Difference]:
    """Every fact whose value is not the same on all nodes (a fact missing on a node counts)."""
    prints = [(node.label, fingerprint(node)) for node in nodes]
    keys: list[str] = []
    for _, facts in prints:
        keys.extend(key for key in facts if key not in keys)
    found = []
    for key in keys:
        by_value: dict[str, list[str]] = {}
        for hostname, facts in prints:
            by_value.setdefault(facts.get(key, "missing"), []).append(hostname)
        if len(by_value) > 1:
            groups = sorted(
                by_value.items(), key=lambda item: -len(item[1])
            )  # stable: ties in node order
            found.append(Difference(key, groups))
    return found
