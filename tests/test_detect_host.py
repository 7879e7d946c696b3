"""Host facts read from /proc, /sys and /etc: a captured tree in tmp_path, and this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcrepro.detect import host

CPUINFO = """\
processor\t: {n}
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480C
physical id\t: {socket}
core id\t\t: {core}
cpu MHz\t\t: 2000.000
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A 2-socket, 2-cores-per-socket, 2-threads-per-core node with one offline CPU folder,
    two ConnectX ports (one InfiniBand up, one Ethernet down) and Ubuntu's os-release."""
    blocks = []
    n = 0
    for socket in range(2):
        for _thread in range(2):
            for core in range(2):
                blocks.append(CPUINFO.format(n=n, socket=socket, core=core))
                cpu = tmp_path / f"sys/devices/system/cpu/cpu{n}"
                _write(cpu / "topology/physical_package_id", f"{socket}\n")
                _write(cpu / "topology/core_id", f"{core}\n")
                n += 1
    (tmp_path / "sys/devices/system/cpu/cpu8").mkdir()  # offline: no topology folder
    _write(tmp_path / "proc/cpuinfo", "\n".join(blocks))
    cache = tmp_path / "sys/devices/system/cpu/cpu0/cache"
    for index, (level, kind, size, shared) in enumerate(
        [
            (1, "Data", "48K", "0,4"),
            (1, "Instruction", "32K", "0,4"),
            (2, "Unified", "2048K", "0,4"),
            (3, "Unified", "107520K", "0-3,8-11"),
        ]
    ):
        for name, value in (
            ("level", level),
            ("type", kind),
            ("size", size),
            ("shared_cpu_list", shared),
        ):
            _write(cache / f"index{index}/{name}", f"{value}\n")
    _write(tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "3800000\n")
    _write(tmp_path / "proc/meminfo", "MemTotal:       2113472400 kB\nMemFree:  1 kB\n")
    _write(tmp_path / "etc/os-release", 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    ib = tmp_path / "sys/class/infiniband"
    for dev, layer, state, phys, rate in (
        ("mlx5_0", "InfiniBand", "4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)"),
        ("mlx5_1", "Ethernet", "1: DOWN", "3: Disabled", "10 Gb/sec (1X QDR)"),
    ):
        _write(ib / dev / "hca_type", "MT4129\n")
        _write(ib / dev / "fw_ver", "28.39.1002\n")
        _write(ib / dev / "ports/1/link_layer", f"{layer}\n")
        _write(ib / dev / "ports/1/state", f"{state}\n")
        _write(ib / dev / "ports/1/phys_state", f"{phys}\n")
        _write(ib / dev / "ports/1/rate", f"{rate}\n")
        (ib / dev / "device/net" / f"ib{dev[-1]}").mkdir(parents=True)
    return tmp_path


def test_cpu_from_tree(tree: Path) -> None:
    cpu = host.read_cpu(tree)
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480C"
    assert (cpu.sockets, cpu.cores, cpu.threads) == (2, 4, 8)
    assert cpu.max_mhz == 3800.0
    assert [(c.level, c.type, c.size_kib, c.shared_by_cpus) for c in cpu.caches] == [
        (1, "Data", 48, 2),
        (1, "Instruction", 32, 2),
        (2, "Unified", 2048, 2),
        (3, "Unified", 107520, 8),
    ]


def test_topology_falls_back_to_cpuinfo(tree: Path) -> None:
    shutil.rmtree(tree / "sys/devices/system/cpu")
    cpu = host.read_cpu(tree)
    assert (cpu.sockets, cpu.cores, cpu.threads) == (2, 4, 8)
    assert cpu.max_mhz == 2000.0 and cpu.caches == []


def test_memory_os_and_infiniband(tree: Path) -> None:
    assert host.read_memory_bytes(tree) == 2113472400 * 1024
    assert host.read_os_name(tree) == "Ubuntu 22.04.4 LTS"
    devices = host.read_infiniband(tree)
    assert [d.name for d in devices] == ["mlx5_0", "mlx5_1"]
    up, down = devices[0].ports[0], devices[1].ports[0]
    assert (up.state, up.phys_state, up.rate_gbps, up.link_layer) == (
        "ACTIVE",
        "LinkUp",
        400.0,
        "InfiniBand",
    )
    assert (down.state, down.phys_state, down.link_layer) == ("DOWN", "Disabled", "Ethernet")
    assert devices[0].netdevs == ["ib0"] and devices[0].fw_version == "28.39.1002"


def test_empty_root_gives_unknowns_not_errors(tmp_path: Path) -> None:
    cpu = host.read_cpu(tmp_path)
    assert (cpu.model, cpu.sockets, cpu.threads) == (None, None, None)
    assert host.read_memory_bytes(tmp_path) is None
    assert host.read_os_name(tmp_path) is None
    assert host.read_infiniband(tmp_path) == []


def test_this_machine() -> None:
    cpu = host.read_cpu()
    assert cpu.threads == len(os.sched_getaffinity(0)) or cpu.threads == os.cpu_count()
    assert cpu.cores and cpu.sockets and cpu.cores >= cpu.sockets
    meminfo_kib = int(Path("/proc/meminfo").read_text().split()[1])
    assert host.read_memory_bytes() == meminfo_kib * 1024
    assert host.read_kernel() == os.uname().release


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("slurm-wlm 22.05.8", "22.05.8"),
        ("slurm 23.02.7", "23.02.7"),
        ("slurm 24.05.4-1", "24.05.4-1"),
        ("", None),
        ("sinfo: fatal: Could not establish a configuration source", None),
    ],
)
def test_slurm_version_text(output: str, version: str | None) -> None:
    assert host.parse_slurm_version(output) == version


def test_slurm_version_of_this_machine() -> None:
    """Matches `sinfo --version` where Slurm answers; None where no client or no config."""
    expected = None
    if shutil.which("sinfo"):
        done = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            expected = done.stdout.split()[-1]
    if expected is None and shutil.which("scontrol"):
        done = subprocess.run(
            ["scontrol", "--version"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            expected = done.stdout.split()[-1]
    assert host.read_slurm_version() == expected
