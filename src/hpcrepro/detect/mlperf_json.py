"""An MLPerf Training system description (`systems/<system_desc_id>.json`) from a node description.

mlperf-logging's system_desc_checker requires 33 keys. The detected ones are filled from NVML and
the OS; the rest (who submits, storage, cooling, software container, ...) cannot be seen from the
node and are written as empty strings and listed, so the user fills exactly those. `status` must
then be one of the long-form strings: the checker enforces them from ruleset 4.0.0 on.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hpcrepro.detect.model import CpuCache, NodeDescription
from hpcrepro.mlperf_system import STATUS_VALUES
from hpcrepro.mlperf_system import SYSTEM_FIELDS as REQUIRED_FIELDS

# What the user is asked for, for each field the node cannot tell.
FILL_HINTS = {
    "submitter": "your organization",
    "division": "closed or open",
    "status": " | ".join(STATUS_VALUES),
    "system_name": "a name for the system, e.g. 'MyCluster (4x 8x H200)'",
    "host_processor_interconnect": "e.g. 'UPI' or 'Infinity Fabric'",
    "host_storage_type": "e.g. 'NVMe SSD' or 'Lustre'",
    "host_storage_capacity": "e.g. '8x 3.84 TB NVMe'",
    "host_networking": "the NICs (no InfiniBand device was found)",
    "host_networking_topology": "e.g. 'rail-optimized fat tree'",
    "host_memory_configuration": "e.g. '32x 64 GB DDR5-4800'",
    "accelerator_on-chip_memories": "e.g. '50 MB L2' (may stay empty)",
    "accelerator_memory_configuration": "e.g. 'HBM3e'",
    "accelerator_interconnect_topology": "the GPU interconnect topology",
    "cooling": "air or liquid",
    "hw_notes": "free text (may stay empty)",
    "host_processor_caches": "e.g. 'L1d 48 KiB, L2 2 MiB, L3 105 MiB'",
    "host_processor_model_name": "the CPU model",
    "operating_system": "e.g. 'Ubuntu 22.04.4 LTS'",
    "framework": "e.g. 'MXNet NVIDIA Release 24.04'",
    "accelerator_model_name": "the GPU model (none was detected)",
    "accelerator_host_interconnect": "e.g. 'PCIe Gen5 x16'",
    "accelerator_frequency": "GPU max clock",
    "accelerator_memory_capacity": "GPU memory",
    "accelerator_interconnect": "e.g. '18x NVLink 4.0 via NVSwitch'",
}


def _cache_text(caches: list[CpuCache]) -> str:
    names = {"Data": "d", "Instruction": "i", "Unified": ""}
    parts = []
    for cache in caches:
        size = (
            f"{cache.size_kib // 1024} MiB"
            if cache.size_kib % 1024 == 0 and cache.size_kib >= 1024
            else f"{cache.size_kib} KiB"
        )
        parts.append(f"L{cache.level}{names.get(cache.type, cache.type)} {size}")
    return ", ".join(parts)


def _host_networking(node: NodeDescription) -> str:
    counts: Counter[str] = Counter()
    for device in node.infiniband:
        for port in device.ports:
            layer = port.link_layer or "InfiniBand"
            kind = f"{device.hca_type or device.name} {layer} {port.rate or ''}".strip()
            counts[kind] += 1
    return ", ".join(f"{count}x {kind}" for kind, count in sorted(counts.items()))


def _nvlink_text(node: NodeDescription) -> tuple[str, str]:
    """(accelerator_interconnect, accelerator_interconnect_topology)."""
    if not any(g.nvlinks for g in node.gpus):
        return "PCIe only (no active NVLink)", "none"
    versions = {link.version for g in node.gpus for link in g.nvlinks if link.version}
    version = f"NVLink {max(versions)}" if versions else "NVLink"
    peer_types = {link.peer_type for g in node.gpus for link in g.nvlinks}
    per_gpu = sorted({len(g.nvlinks) for g in node.gpus})
    count = "/".join(str(n) for n in per_gpu)
    if peer_types == {"switch"}:
        return f"{count}x {version} per GPU via NVSwitch", "all-to-all through NVSwitch"
    by_bus = {g.bus_id: g.index for g in node.gpus}
    pairs = sorted(
        {
            tuple(sorted((g.index, by_bus[link.peer_bus_id])))
            for g in node.gpus
            for link in g.nvlinks
            if link.peer_bus_id in by_bus
        }
    )
    topology = ("GPU-to-GPU links: " + ", ".join(f"{a}-{b}" for a, b in pairs)) if pairs else ""
    return f"{count}x {version} per GPU", topology


def system_description(node: NodeDescription, nodes: int) -> tuple[dict[str, Any], list[str]]:
    """(description with every required key, the keys left empty for the user to fill)."""
    cpu = node.cpu
    desc: dict[str, Any] = dict.fromkeys(REQUIRED_FIELDS, "")
    desc["number_of_nodes"] = str(nodes)
    if cpu.sockets:
        desc["host_processors_per_node"] = str(cpu.sockets)
    if cpu.model:
        desc["host_processor_model_name"] = cpu.model
    if cpu.cores and cpu.sockets:
        desc["host_processor_core_count"] = str(cpu.cores // cpu.sockets)
    if cpu.threads:
        desc["host_processor_vcpu_count"] = str(cpu.threads)
    if cpu.max_mhz:
        desc["host_processor_frequency"] = f"{cpu.max_mhz:.0f} MHz"
    desc["host_processor_caches"] = _cache_text(cpu.caches)
    if node.memory_bytes:
        desc["host_memory_capacity"] = f"{node.memory_bytes / 1024**3:.0f} GiB"
    desc["host_networking"] = _host_networking(node)
    desc["operating_system"] = node.os_name or ""
    software = {
        "cuda_driver_version": node.nvml.driver_version,
        "cuda_version": node.nvml.cuda_driver_version,
        "kernel_version": f"Linux {node.kernel}" if node.kernel else None,
        "slurm_version": node.slurm_version,
    }
    desc["other_software_stack"] = {k: v for k, v in software.items() if v}
    desc["sw_notes"] = (
        f"Host facts captured by hpcrepro detect on {node.hostname} at {node.captured_at}"
    )
    desc["accelerators_per_node"] = str(node.gpu_count)
    if node.gpus:
        gpu = node.gpus[0]
        desc["accelerator_model_name"] = node.gpu_name or ", ".join(
            sorted({g.name for g in node.gpus})
        )
        if gpu.pcie_gen_max and gpu.pcie_width_max:
            desc["accelerator_host_interconnect"] = (
                f"PCIe Gen{gpu.pcie_gen_max} x{gpu.pcie_width_max}"
            )
        if gpu.max_sm_clock_mhz:
            desc["accelerator_frequency"] = f"{gpu.max_sm_clock_mhz} MHz"
        if gpu.memory_total_mib:
            desc["accelerator_memory_capacity"] = f"{gpu.memory_total_mib} MiB"
        desc["accelerator_interconnect"], desc["accelerator_interconnect_topology"] = _nvlink_text(
            node
        )
        notes = []
        if gpu.power_limit_w:
            notes.append(f"GPU power limit {gpu.power_limit_w:.0f} W")
        if gpu.ecc_enabled is not None:
            notes.append(f"ECC {'on' if gpu.ecc_enabled else 'off'}")
        if gpu.mig_enabled is not None:
            notes.append(f"MIG {'on' if gpu.mig_enabled else 'off'}")
        desc["hw_notes"] = ", ".join(notes)
    missing = [key for key in REQUIRED_FIELDS if desc[key] in ("", {})]
    return desc, missing
