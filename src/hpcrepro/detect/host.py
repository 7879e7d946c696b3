"""Host facts from the operating system: CPU, memory, OS, kernel, InfiniBand ports, Slurm version.

Read from /proc, /sys and /etc directly (standard library only), so the capture runs on a bare
compute node. `root` lets tests point the reader at a captured copy of those trees.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

from hpcrepro.detect.model import Cpu, CpuCache, IbDevice, IbPort

_SIZE_UNITS = {"K": 1, "M": 1024, "G": 1024 * 1024}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cpuinfo_blocks(root: Path) -> list[dict[str, str]]:
    text = _read(root / "proc/cpuinfo") or ""
    blocks = []
    for chunk in text.split("\n\n"):
        block = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                block[key.strip().lower()] = value.strip()
        if block:
            blocks.append(block)
    return blocks


def _cpu_model(root: Path, blocks: list[dict[str, str]]) -> str | None:
    for block in blocks:
        for key in ("model name", "cpu model", "hardware"):
            if block.get(key):
                return block[key]
    if root == Path("/") and shutil.which("lscpu"):  # aarch64 /proc/cpuinfo has no model name
        output = _run(["lscpu"])
        for line in (output or "").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name" and value.strip():
                return value.strip()
    return None


def _topology(root: Path) -> tuple[int | None, int | None, int | None]:
    """(sockets, physical cores, logical CPUs) from sysfs topology, counted over online CPUs."""
    cpu_dirs = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*"))
    packages: set[str] = set()
    cores: set[tuple[str, str]] = set()
    threads = 0
    for cpu_dir in cpu_dirs:
        package = _read(cpu_dir / "topology/physical_package_id")
        core = _read(cpu_dir / "topology/core_id")
        if package is None or core is None:
            continue  # offline CPU: no topology folder
        threads += 1
        packages.add(package)
        cores.add((package, core))
    if not threads:
        return None, None, None
    return len(packages), len(cores), threads


def _topology_from_cpuinfo(
    blocks: list[dict[str, str]],
) -> tuple[int | None, int | None, int | None]:
    processors = [b for b in blocks if "processor" in b]
    if not processors:
        return None, None, None
    packages = {b.get("physical id", "0") for b in processors}
    cores = {(b.get("physical id", "0"), b.get("core id", b["processor"])) for b in processors}
    return len(packages), len(cores), len(processors)


def _caches(root: Path) -> list[CpuCache]:
    caches = []
    for index_dir in sorted((root / "sys/devices/system/cpu/cpu0/cache").glob("index[0-9]*")):
        level = _int(_read(index_dir / "level"))
        kind = _read(index_dir / "type")
        size = _read(index_dir / "size")
        if level is None or kind is None or not size:
            continue
        match = re.fullmatch(r"(\d+)([KMG]?)", size)
        if not match:
            continue
        size_kib = int(match.group(1)) * _SIZE_UNITS.get(match.group(2) or "K", 1)
        shared = _read(index_dir / "shared_cpu_list")
        caches.append(CpuCache(level, kind, size_kib, _count_cpu_list(shared) if shared else None))
    return caches


def _count_cpu_list(text: str) -> int | None:
    """'0-55,112-167' → 112."""
    total = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            return None
        total += (int(high) - int(low) + 1) if high else 1
    return total


def _max_mhz(root: Path, blocks: list[dict[str, str]]) -> float | None:
    khz = _int(_read(root / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))
    if khz:
        return khz / 1000.0
    for block in blocks:
        if "cpu mhz" in block:
            try:
                return float(block["cpu mhz"])
            except ValueError:
                return None
    return None


def read_cpu(root: Path = Path("/")) -> Cpu:
    blocks = _cpuinfo_blocks(root)
    sockets, cores, threads = _topology(root)
    if threads is None:
        sockets, cores, threads = _topology_from_cpuinfo(blocks)
    return Cpu(
        model=_cpu_model(root, blocks),
        architecture=(platform.machine() or None) if root == Path("/") else None,
        sockets=sockets,
        cores=cores,
        threads=threads,
        max_mhz=_max_mhz(root, blocks),
        caches=_caches(root),
    )


def read_memory_bytes(root: Path = Path("/")) -> int | None:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def read_os_name(root: Path = Path("/")) -> str | None:
    values: dict[str, str] = {}
    for line in (_read(root / "etc/os-release") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("\"'")
    return values.get("PRETTY_NAME") or values.get("NAME")


def _rate_gbps(rate: str | None) -> float | None:
    match = re.match(r"\s*([\d.]+)\s*Gb/sec", rate or "")
    return float(match.group(1)) if match else None


def _state(text: str | None) -> str | None:
    """Kernel writes '4: ACTIVE' / '5: LinkUp'; keep the word."""
    if text is None:
        return None
    return text.partition(":")[2].strip() or text.strip()


def read_infiniband(root: Path = Path("/")) -> list[IbDevice]:
    devices = []
    for dev_dir in sorted((root / "sys/class/infiniband").glob("*")):
        device = IbDevice(
            name=dev_dir.name,
            hca_type=_read(dev_dir / "hca_type"),
            board_id=_read(dev_dir / "board_id"),
            fw_version=_read(dev_dir / "fw_ver"),
            netdevs=sorted(p.name for p in (dev_dir / "device/net").glob("*")),
        )
        for port_dir in sorted((dev_dir / "ports").glob("*"), key=lambda p: _int(p.name) or 0):
            port = _int(port_dir.name)
            if port is None:
                continue
            rate = _read(port_dir / "rate")
            device.ports.append(
                IbPort(
                    port=port,
                    state=_state(_read(port_dir / "state")),
                    phys_state=_state(_read(port_dir / "phys_state")),
                    rate=rate,
                    rate_gbps=_rate_gbps(rate),
                    link_layer=_read(port_dir / "link_layer"),
                )
            )
        devices.append(device)
    return devices


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def parse_slurm_version(text: str) -> str | None:
    """'slurm 23.02.7' or 'slurm-wlm 22.05.8' → the version; None for anything else."""
    match = re.match(r"slurm\S*\s+(\d+\.\d+\S*)", text.strip())
    return match.group(1) if match else None


def read_slurm_version() -> str | None:
    """The version `sinfo --version` (or scontrol) prints; None where no Slurm client answers."""
    for tool in ("sinfo", "scontrol"):
        if shutil.which(tool):
            version = parse_slurm_version(_run([tool, "--version"]) or "")
            if version:
                return version
    return None


def read_kernel() -> str | None:
    return platform.release() or None
