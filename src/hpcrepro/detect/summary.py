"""A short human-readable summary of a node description (the default output of `detect`)."""

from __future__ import annotations

from collections import Counter

from hpcrepro.detect.model import Gpu, NodeDescription


def _gib(value: int | None) -> str:
    return f"{value / 1024**3:.0f} GiB" if value is not None else "?"


def _show(value: object) -> str:
    return "?" if value is None else str(value)


def _nvlink_text(gpu: Gpu) -> str:
    if not gpu.nvlinks:
        return "no NVLink"
    peers = Counter(link.peer_type or "?" for link in gpu.nvlinks)
    detail = ", ".join(f"{count} to {kind}" for kind, count in sorted(peers.items()))
    return f"{len(gpu.nvlinks)} NVLinks ({detail})"


def summary_text(node: NodeDescription) -> str:
    cpu = node.cpu
    lines = [
        f"node      {node.hostname}  ({node.os_name or '?'}, kernel {node.kernel or '?'})",
        f"cpu       {_show(cpu.sockets)} x {cpu.model or '?'}: {_show(cpu.cores)} cores, "
        f"{_show(cpu.threads)} threads",
        f"memory    {_gib(node.memory_bytes)}",
        f"slurm     {node.slurm_version or 'not found'}",
    ]
    for device in node.infiniband:
        ports = ", ".join(
            f"port {p.port} {p.state or '?'} {p.rate or '?'} {p.link_layer or ''}".rstrip()
            for p in device.ports
        )
        lines.append(f"ib        {device.name}: {ports or 'no ports'}")
    if not node.nvml.available or not node.gpus:
        lines.append(f"gpus      none ({node.nvml.notice or 'no GPU found'})")
        return "\n".join(lines) + "\n"
    lines.append(
        f"driver    {_show(node.nvml.driver_version)}, CUDA {_show(node.nvml.cuda_driver_version)}"
    )
    for gpu in node.gpus:
        pcie = (
            f"PCIe gen {_show(gpu.pcie_gen_current)}/{_show(gpu.pcie_gen_max)} "
            f"x{_show(gpu.pcie_width_current)}/x{_show(gpu.pcie_width_max)}"
        )
        memory = f"{gpu.memory_total_mib} MiB" if gpu.memory_total_mib is not None else "? MiB"
        lines.append(
            f"gpu {gpu.index:<5} {gpu.name}, {memory}, {_show(gpu.power_limit_w)} W, {pcie}, "
            f"MIG {_flag(gpu.mig_enabled)}, ECC {_flag(gpu.ecc_enabled)}, {_nvlink_text(gpu)}"
        )
        lines.extend(f"          note: {note}" for note in gpu.notes)
    return "\n".join(lines) + "\n"


def _flag(value: bool | None) -> str:
    return "?" if value is None else ("on" if value else "off")
