"""GPU facts through NVML (nvidia-ml-py, imported as `pynvml`).

Every NVML call is guarded: GPUs differ in what they support (no NVLink on a PCIe card, no MIG on
an L40S, no power limit query on some boards), and a call that is not supported gives `None` for
that field instead of an error. Any other failure on one field (an NVML error, or an answer this
code does not understand) is recorded in the GPU's `notes` and the rest of the description still
comes back. A node without driver or library gets a
one-line notice and no GPUs.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hpcrepro.detect.model import Gpu, NvLink, NvmlInfo

T = TypeVar("T")

_PEER_TYPES = {0: "gpu", 1: "ibmnpu", 2: "switch"}
# nvmlDeviceGetNvLinkVersion answers with nvmlNvlinkVersion_t, not the version itself
# (an A100 answers 5 for NVLink 3.1; hwloc issue #658).
_NVLINK_VERSIONS = {1: "1.0", 2: "2.0", 3: "2.2", 4: "3.0", 5: "3.1", 6: "4.0", 7: "5.0", 8: "6.0"}


@dataclass
class GpuReport:
    info: NvmlInfo
    gpus: list[Gpu]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def normalize_bus_id(bus_id: Any) -> str:
    """NVML writes '00000000:18:00.0', sysfs '0000:18:00.0': compare them with an 8-digit domain."""
    text = _text(bus_id).strip().lower()
    parts = text.split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    if len(parts) != 3:
        return text
    try:
        domain = int(parts[0], 16)
    except ValueError:
        return text
    return f"{domain:08x}:{parts[1]}:{parts[2]}"


class _Guard:
    """Call NVML functions for one GPU; unsupported → None, other failures → a note."""

    def __init__(self, nvml: Any, notes: list[str]) -> None:
        self.nvml = nvml
        self.notes = notes

    def map(self, what: str, fn_name: str, convert: Callable[[Any], T], *args: Any) -> T | None:
        """`convert(fn(*args))`, or None with a note; unknown hardware must not stop the capture."""
        fn = getattr(self.nvml, fn_name, None)
        if fn is None:  # an older nvidia-ml-py without this function
            return None
        try:
            value = fn(*args)
            return None if value is None else convert(value)
        except self.nvml.NVMLError as exc:
            if not _is_not_supported(self.nvml, exc):
                self.notes.append(f"{what}: {_text(exc)}")
        except Exception as exc:  # an answer in a shape this code does not know
            self.notes.append(f"{what}: unexpected {type(exc).__name__}: {exc}")
        return None


def _is_not_supported(nvml: Any, exc: Exception) -> bool:
    quiet = tuple(
        getattr(nvml, name)
        for name in (
            "NVMLError_NotSupported",
            "NVMLError_FunctionNotFound",
            "NVMLError_InvalidArgument",
        )
        if hasattr(nvml, name)
    )
    return isinstance(exc, quiet)


def _cuda_version(value: int) -> str:
    """NVML gives 12040 for CUDA 12.4."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def _nvlink_version(value: Any) -> str:
    return _NVLINK_VERSIONS.get(int(value), f"unknown ({int(value)})")


def _enabled(value: Any) -> bool:
    return bool(int(value))


def _pair_of_flags(value: Any) -> tuple[bool, bool]:
    """(current, pending) as NVML answers MIG and ECC modes."""
    return _enabled(value[0]), _enabled(value[1])


def _bus_id_of(pci: Any) -> str:
    return normalize_bus_id(pci.busId)


def _peer_type(kind: Any) -> str:
    return _PEER_TYPES.get(int(kind), "unknown")


def _read_gpu(nvml: Any, index: int) -> Gpu:
    notes: list[str] = []
    guard = _Guard(nvml, notes)
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        return Gpu(
            index=index, name="unavailable", notes=[f"cannot open GPU {index}: {_text(exc)}"]
        )
    name = guard.map("name", "nvmlDeviceGetName", _text, handle) or "unknown"
    gpu = Gpu(index=index, name=name, notes=notes)
    gpu.uuid = guard.map("uuid", "nvmlDeviceGetUUID", _text, handle)
    gpu.bus_id = guard.map("PCI", "nvmlDeviceGetPciInfo", _bus_id_of, handle)
    gpu.memory_total_mib = guard.map(
        "memory", "nvmlDeviceGetMemoryInfo", lambda m: int(m.total) // (1024 * 1024), handle
    )
    gpu.compute_capability = guard.map(
        "compute capability",
        "nvmlDeviceGetCudaComputeCapability",
        lambda cc: f"{int(cc[0])}.{int(cc[1])}",
        handle,
    )
    gpu.max_sm_clock_mhz = guard.map(
        "max SM clock", "nvmlDeviceGetMaxClockInfo", int, handle, nvml.NVML_CLOCK_SM
    )
    gpu.max_memory_clock_mhz = guard.map(
        "max memory clock", "nvmlDeviceGetMaxClockInfo", int, handle, nvml.NVML_CLOCK_MEM
    )
    gpu.power_limit_w = guard.map(
        "power limit", "nvmlDeviceGetPowerManagementLimit", lambda mw: mw / 1000.0, handle
    )
    gpu.pcie_gen_current = guard.map(
        "PCIe generation", "nvmlDeviceGetCurrPcieLinkGeneration", int, handle
    )
    gpu.pcie_gen_max = guard.map(
        "PCIe max generation", "nvmlDeviceGetMaxPcieLinkGeneration", int, handle
    )
    gpu.pcie_width_current = guard.map("PCIe width", "nvmlDeviceGetCurrPcieLinkWidth", int, handle)
    gpu.pcie_width_max = guard.map("PCIe max width", "nvmlDeviceGetMaxPcieLinkWidth", int, handle)
    mig = guard.map("MIG mode", "nvmlDeviceGetMigMode", _pair_of_flags, handle)
    if mig is not None:
        gpu.mig_enabled, gpu.mig_pending = mig
    ecc = guard.map("ECC mode", "nvmlDeviceGetEccMode", _pair_of_flags, handle)
    if ecc is not None:
        gpu.ecc_enabled, gpu.ecc_pending = ecc
    gpu.nvlinks = _read_nvlinks(nvml, guard, handle)
    return gpu


def _read_nvlinks(nvml: Any, guard: _Guard, handle: Any) -> list[NvLink]:
    """Active links only; a GPU without NVLink answers 'not supported' on link 0 and has none."""
    links: list[NvLink] = []
    for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
        state = guard.map(
            f"NVLink {link} state", "nvmlDeviceGetNvLinkState", _enabled, handle, link
        )
        if not state:
            continue
        links.append(
            NvLink(
                link=link,
                version=guard.map(
                    f"NVLink {link} version",
                    "nvmlDeviceGetNvLinkVersion",
                    _nvlink_version,
                    handle,
                    link,
                ),
                peer_bus_id=guard.map(
                    f"NVLink {link} peer",
                    "nvmlDeviceGetNvLinkRemotePciInfo",
                    _bus_id_of,
                    handle,
                    link,
                ),
                peer_type=guard.map(
                    f"NVLink {link} peer type",
                    "nvmlDeviceGetNvLinkRemoteDeviceType",
                    _peer_type,
                    handle,
                    link,
                ),
            )
        )
    return links


def read_gpus(nvml: Any = None) -> GpuReport:
    """Describe every GPU NVML sees; without NVML, an empty list and the reason in `info.notice`."""
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")  # nvidia-ml-py
        except ImportError:
            return GpuReport(
                NvmlInfo(
                    available=False, notice="nvidia-ml-py is not installed: describing CPUs only"
                ),
                [],
            )
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return GpuReport(NvmlInfo(available=False, notice=_init_notice(nvml, exc)), [])
    except OSError as exc:  # a broken libnvidia-ml.so
        return GpuReport(
            NvmlInfo(
                available=False, notice=f"NVML library failed to load ({exc}): describing CPUs only"
            ),
            [],
        )
    try:
        info_notes: list[str] = []
        guard = _Guard(nvml, info_notes)
        info = NvmlInfo(
            available=True,
            driver_version=guard.map("driver", "nvmlSystemGetDriverVersion", _text),
            cuda_driver_version=guard.map(
                "CUDA", "nvmlSystemGetCudaDriverVersion_v2", _cuda_version
            ),
            nvml_version=guard.map("NVML", "nvmlSystemGetNVMLVersion", _text),
        )
        count = guard.map("GPU count", "nvmlDeviceGetCount", int) or 0
        if count == 0:
            info_notes.insert(0, "NVML found no NVIDIA GPU: describing CPUs only")
        gpus = [_read_gpu(nvml, index) for index in range(count)]
        info.notice = "; ".join(info_notes) or None
        return GpuReport(info, gpus)
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _init_notice(nvml: Any, exc: Exception) -> str:
    if isinstance(exc, getattr(nvml, "NVMLError_LibraryNotFound", ())):
        return "no NVIDIA driver library (libnvidia-ml.so.1) on this node: describing CPUs only"
    if isinstance(exc, getattr(nvml, "NVMLError_DriverNotLoaded", ())):
        return "the NVIDIA driver is not loaded on this node: describing CPUs only"
    if isinstance(exc, getattr(nvml, "NVMLError_NoPermission", ())):
        return "no permission to open the NVIDIA devices: describing CPUs only"
    return f"NVML failed to start ({_text(exc)}): describing CPUs only"
