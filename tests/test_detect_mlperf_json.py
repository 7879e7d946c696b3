"""MLPerf system description: every required key, the undetectable ones listed, and
mlperf-logging's own system_desc_checker accepts it once those are filled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlperf_logging.system_desc_checker.system_desc_checker import check_system_desc

from hpcrepro.detect.mlperf_json import REQUIRED_FIELDS, STATUS_VALUES, system_description
from hpcrepro.detect.model import load_description

DATA = Path(__file__).parent / "data" / "detect"

FILLED = {
    "submitter": "Example HPC Centre",
    "division": "closed",
    "status": "Research, Development, or Internal (RDI)",
    "system_name": "example_h200_n4",
    "host_processor_interconnect": "UPI",
    "host_storage_type": "NVMe SSD",
    "host_storage_capacity": "8x 3.84 TB NVMe",
    "host_networking": "8x ConnectX-7 NDR 400 Gb/s",
    "host_networking_topology": "rail-optimized fat tree",
    "host_memory_configuration": "32x 64 GB DDR5-4800",
    "accelerator_on-chip_memories": "50 MB L2",
    "accelerator_memory_configuration": "HBM3e",
    "accelerator_interconnect_topology": "NVLink switch system",
    "cooling": "air",
    "framework": "MXNet NVIDIA Release 24.04",
    "host_processor_caches": "see lscpu",
}


def _write(tmp_path: Path, description: dict) -> Path:
    path = tmp_path / "example_h200_n4.json"
    path.write_text(json.dumps(description, indent=4))
    return path


SINGLE_NODE_FIXTURES = sorted(
    p.name for p in DATA.glob("*.json") if not isinstance(json.loads(p.read_text()), list)
)


@pytest.mark.parametrize("fixture", SINGLE_NODE_FIXTURES)
@pytest.mark.parametrize("ruleset", ["2.1.0", "3.0.0", "3.1.0", "4.0.0"])
def test_checker_accepts_it_once_filled(tmp_path: Path, fixture: str, ruleset: str) -> None:
    description, missing = system_description(load_description(DATA / fixture), 4)
    assert list(description) == list(REQUIRED_FIELDS)
    assert {"submitter", "division", "status", "system_name"} <= set(missing)
    path = _write(tmp_path, description)
    assert check_system_desc(str(path), "training", ruleset)[0] is (ruleset < "4.0.0")
    description.update({key: FILLED.get(key, "filled in by hand") for key in missing})
    valid, name, _, _ = check_system_desc(str(_write(tmp_path, description)), "training", ruleset)
    assert valid and name == "example_h200_n4"


def test_detected_values_of_the_h200_fixture() -> None:
    description, missing = system_description(
        load_description(DATA / "h200_8gpu_handwritten.json"), 4
    )
    assert description["number_of_nodes"] == "4" and description["accelerators_per_node"] == "8"
    assert description["host_processor_core_count"] == "56"  # per processor, as MLPerf uses it
    assert description["host_processors_per_node"] == "2"
    assert description["accelerator_memory_capacity"] == "143771 MiB"
    assert description["accelerator_host_interconnect"] == "PCIe Gen5 x16"
    assert description["accelerator_interconnect"] == "18x NVLink 4.0 per GPU via NVSwitch"
    assert description["other_software_stack"]["cuda_driver_version"] == "550.54.15"
    assert missing == [
        "submitter",
        "division",
        "status",
        "system_name",
        "host_processor_interconnect",
        "host_storage_type",
        "host_storage_capacity",
        "host_networking_topology",
        "host_memory_configuration",
        "accelerator_on-chip_memories",
        "accelerator_memory_configuration",
        "cooling",
        "framework",
    ]


def test_unfilled_status_is_refused_from_4_0(tmp_path: Path) -> None:
    description, _ = system_description(load_description(DATA / "h200_8gpu_handwritten.json"), 1)
    path = _write(tmp_path, description)
    assert check_system_desc(str(path), "training", "4.0.0")[0] is False
    description["status"] = "onprem"  # NVIDIA's own v4.0 spelling: refused at 4.0.0 today
    assert check_system_desc(str(_write(tmp_path, description)), "training", "4.0.0")[0] is False
    for status in STATUS_VALUES:
        description["status"] = status
        assert check_system_desc(str(_write(tmp_path, description)), "training", "4.0.0")[0] is True


@pytest.mark.parametrize("key", REQUIRED_FIELDS)
def test_every_listed_field_is_required_by_the_checker(tmp_path: Path, key: str) -> None:
    description, missing = system_description(
        load_description(DATA / "h200_8gpu_handwritten.json"), 1
    )
    description.update({k: FILLED[k] for k in missing})
    del description[key]
    assert check_system_desc(str(_write(tmp_path, description)), "training", "4.0.0")[0] is False


def test_checker_command_line_passes(tmp_path: Path) -> None:
    description, missing = system_description(
        load_description(DATA / "h200_8gpu_handwritten.json"), 4
    )
    description.update({key: FILLED[key] for key in missing})
    path = _write(tmp_path, description)
    log = tmp_path / "checker.log"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlperf_logging.system_desc_checker",
            str(path),
            "training",
            "4.0.0",
            "--log_output",
            str(log),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "System description checker passed for example_h200_n4" in log.read_text()
