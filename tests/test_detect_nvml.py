"""NVML reading. This machine has no NVIDIA driver, so the no-GPU paths run against the real
nvidia-ml-py and the real missing library. The per-GPU guards are checked with a stand-in NVML
module that raises nvidia-ml-py's own error classes; the real reading on an H200 is the lead's
captured fixture (see tests/data/detect/README.md)."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from hpcrepro.detect.describe import describe_node
from hpcrepro.detect.nvml import normalize_bus_id, read_gpus


def test_no_driver_on_this_machine_gives_a_notice() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:  # pragma: no cover - only on a machine with a driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver; the no-driver path cannot be shown here")
    report = read_gpus()
    assert report.gpus == [] and report.info.available is False
    assert report.info.notice == (
        "no NVIDIA driver library (libnvidia-ml.so.1) on this node: describing CPUs only"
    )
    node = describe_node()
    assert node.gpus == [] and node.nvml.notice == report.info.notice and node.cpu.threads


def test_without_nvidia_ml_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml → ImportError
    report = read_gpus()
    assert report.info.notice == "nvidia-ml-py is not installed: describing CPUs only"


class StandInNvml:
    """Two GPUs: an HGX H100 with NVSwitch links whose power query fails, and a PCIe card
    without NVLink or MIG support. Errors are nvidia-ml-py's own classes."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_FunctionNotFound = pynvml.NVMLError_FunctionNotFound
    NVMLError_InvalidArgument = pynvml.NVMLError_InvalidArgument
    NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_NVLINK_MAX_LINKS = 36

    def __init__(self, init_error: Exception | None = None, count: int = 2) -> None:
        self.init_error = init_error
        self.count = count
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlSystemGetNVMLVersion(self) -> str:
        return "12.550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index == 2:
            raise pynvml.NVMLError_GpuIsLost()
        return index

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return [b"NVIDIA H100 80GB HBM3", b"NVIDIA L40S"][h]

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}"

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return SimpleNamespace(busId=[b"00000000:18:00.0", "0000:2A:00.0"][h])

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=[81559, 46068][h] * 1024 * 1024)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return [(9, 0), (8, 9)][h]

    def nvmlDeviceGetMaxClockInfo(self, h: int, kind: int) -> int:
        return {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}[kind]

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        if h == 0:
            raise pynvml.NVMLError_Unknown()
        return 350000

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int:
        return 1

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:
        return [5, 4][h]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:
        return 16

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:
        return 16

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        if h == 1:
            raise pynvml.NVMLError_NotSupported()
        return [0, 1]

    def nvmlDeviceGetEccMode(self, h: int) -> list[int]:
        return [1, 1]

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        if h == 1:
            raise pynvml.NVMLError_NotSupported()
        if link >= 18:
            raise pynvml.NVMLError_InvalidArgument()
        return 0 if link == 17 else 1  # one link down

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: int, link: int) -> Any:
        return SimpleNamespace(busId=b"00000000:05:00.0")

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h: int, link: int) -> int:
        return pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH

    # nvmlDeviceGetNvLinkVersion is missing on purpose: an older nvidia-ml-py.


def test_guarded_reading_of_two_gpus() -> None:
    nvml = StandInNvml()
    report = read_gpus(nvml)
    assert nvml.shutdown
    info = report.info
    assert (info.available, info.driver_version, info.cuda_driver_version) == (
        True,
        "550.54.15",
        "12.4",
    )
    assert info.notice is None
    hgx, pcie = report.gpus
    assert hgx.name == "NVIDIA H100 80GB HBM3" and hgx.bus_id == "00000000:18:00.0"
    assert hgx.memory_total_mib == 81559 and hgx.compute_capability == "9.0"
    assert hgx.power_limit_w is None and hgx.notes == ["power limit: Unknown Error"]
    assert (hgx.mig_enabled, hgx.mig_pending, hgx.ecc_enabled) == (False, True, True)
    assert (hgx.pcie_gen_current, hgx.pcie_gen_max, hgx.pcie_width_max) == (1, 5, 16)
    assert len(hgx.nvlinks) == 17
    assert {(n.peer_type, n.peer_bus_id, n.version) for n in hgx.nvlinks} == {
        ("switch", "00000000:05:00.0", None)
    }
    assert pcie.bus_id == "00000000:2a:00.0" and pcie.power_limit_w == 350.0
    assert pcie.mig_enabled is None and pcie.nvlinks == [] and pcie.notes == []


class StandInNvmlWithVersion(StandInNvml):
    def nvmlDeviceGetNvLinkVersion(self, h: int, link: int) -> int:
        return 5  # nvmlNvlinkVersion_t: NVLink 3.1, what an A100 answers


def test_nvlink_version_is_decoded_from_nvmls_enum() -> None:
    hgx = read_gpus(StandInNvmlWithVersion()).gpus[0]
    assert {link.version for link in hgx.nvlinks} == {"3.1"}


def test_lost_gpu_is_reported_not_raised() -> None:
    report = read_gpus(StandInNvml(count=3))
    lost = report.gpus[2]
    assert lost.name == "unavailable" and "cannot open GPU 2" in lost.notes[0]


def test_driver_not_loaded_notice() -> None:
    report = read_gpus(StandInNvml(init_error=pynvml.NVMLError_DriverNotLoaded()))
    assert report.gpus == []
    assert (
        report.info.notice == "the NVIDIA driver is not loaded on this node: describing CPUs only"
    )


def test_no_gpu_notice() -> None:
    report = read_gpus(StandInNvml(count=0))
    assert report.info.available and report.gpus == []
    assert report.info.notice == "NVML found no NVIDIA GPU: describing CPUs only"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("00000000:18:00.0", "00000000:18:00.0"),
        (b"0000:DB:00.0", "00000000:db:00.0"),
        ("18:00.0", "00000000:18:00.0"),
        ("garbage", "garbage"),
    ],
)
def test_bus_ids_compare_across_spellings(raw: Any, normal: str) -> None:
    assert normalize_bus_id(raw) == normal


class StandInNvmlOddAnswers(StandInNvml):
    """A driver whose answers have shapes this code does not expect, and whose count fails."""

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return SimpleNamespace()  # no busId

    def nvmlDeviceGetMigMode(self, h: int) -> int:
        return 0  # not a pair


def test_odd_answers_become_notes_not_tracebacks() -> None:
    gpu = read_gpus(StandInNvmlOddAnswers()).gpus[0]
    assert gpu.bus_id is None and gpu.mig_enabled is None
    assert any(note.startswith("PCI: unexpected AttributeError") for note in gpu.notes)
    assert any(note.startswith("MIG mode: unexpected TypeError") for note in gpu.notes)
    assert gpu.memory_total_mib == 81559  # the rest still comes back


def test_failing_gpu_count_is_a_notice() -> None:
    class CountFails(StandInNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise pynvml.NVMLError_Unknown()

    report = read_gpus(CountFails())
    assert report.gpus == []
    assert (
        report.info.notice
        == "NVML found no NVIDIA GPU: describing CPUs only; GPU count: Unknown Error"
    )
