"""Capture a real GPU node with `hpcrepro detect`, cross-check it against nvidia-smi, time it.

Runs with python3 + nvidia-ml-py only (no other hpcrepro dependency), unattended:

    OUT=/some/folder python3 benchmarks/detect_capture.py

Writes into $OUT (default ./detect-capture): node.json (the description, to become the test
fixture), summary.txt, mlperf_system.json (+ missing fields), nvidia-smi.csv, nvlink.txt,
topo.txt, crosscheck.txt, timing.txt, and prints them. Anchor for timing: `nvidia-smi -q`
(the tool people use for the same facts) in the same run; ratio = hpcrepro / anchor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from hpcrepro.detect.describe import describe_node  # noqa: E402
from hpcrepro.detect.mlperf_json import system_description  # noqa: E402
from hpcrepro.detect.model import NodeDescription  # noqa: E402
from hpcrepro.detect.summary import summary_text  # noqa: E402

SMI_FIELDS = (
    "index,name,pci.bus_id,memory.total,power.limit,pcie.link.gen.max,pcie.link.width.max,"
    "mig.mode.current,ecc.mode.current,clocks.max.sm,driver_version"
)


def best_of(runs: int, command: list[str], env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - start)
    return min(times)


def smi(*args: str) -> str:
    done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout
    return f"nvidia-smi {' '.join(args)} failed: {done.stderr}"


def _compare(index: int, label: str, ours: object, theirs: str) -> str:
    verdict = "ok" if str(ours) == theirs else "MISMATCH"
    return f"{verdict} gpu{index} {label}: hpcrepro={ours} nvidia-smi={theirs}"


def crosscheck(node: NodeDescription, csv_text: str, nvlink_text: str) -> list[str]:
    """One line per compared value: 'ok' or 'MISMATCH'."""
    lines = []
    by_index = {gpu.index: gpu for gpu in node.gpus}
    for row in csv_text.strip().splitlines():
        cells = [cell.strip() for cell in row.split(",")]
        if len(cells) != 11 or not cells[0].isdigit():
            lines.append(f"unparsed nvidia-smi row: {row}")
            continue
        gpu = by_index.get(int(cells[0]))
        if gpu is None:
            lines.append(f"MISMATCH gpu {cells[0]}: in nvidia-smi, not in the description")
            continue
        mig = {True: "Enabled", False: "Disabled", None: "[N/A]"}[gpu.mig_enabled]
        ecc = {True: "Enabled", False: "Disabled", None: "[N/A]"}[gpu.ecc_enabled]
        power = f"{gpu.power_limit_w:.2f}" if gpu.power_limit_w is not None else "[N/A]"
        lines.append(_compare(gpu.index, "name", gpu.name, cells[1]))
        lines.append(_compare(gpu.index, "bus id", gpu.bus_id, cells[2].lower()))
        lines.append(_compare(gpu.index, "memory MiB", gpu.memory_total_mib, cells[3]))
        lines.append(_compare(gpu.index, "power limit W", power, cells[4]))
        lines.append(_compare(gpu.index, "PCIe gen max", gpu.pcie_gen_max, cells[5]))
        lines.append(_compare(gpu.index, "PCIe width max", gpu.pcie_width_max, cells[6]))
        lines.append(_compare(gpu.index, "MIG", mig, cells[7]))
        lines.append(_compare(gpu.index, "ECC", ecc, cells[8]))
        lines.append(_compare(gpu.index, "max SM clock", gpu.max_sm_clock_mhz, cells[9]))
        lines.append(_compare(gpu.index, "driver", node.nvml.driver_version, cells[10]))
    links: dict[int, int] = {}
    current = None
    for line in nvlink_text.splitlines():
        if line.startswith("GPU "):
            current = int(line.split()[1].rstrip(":"))
            links[current] = 0
        elif current is not None and line.strip().startswith("Link ") and "inactive" not in line:
            links[current] += 1
    for index, count in sorted(links.items()):
        ours = len(by_index[index].nvlinks) if index in by_index else None
        verdict = "ok" if ours == count else "MISMATCH"
        lines.append(f"{verdict} gpu{index} active NVLinks: hpcrepro={ours} nvidia-smi={count}")
    return lines


def main() -> int:
    out = Path(os.environ.get("OUT") or "detect-capture")
    out.mkdir(parents=True, exist_ok=True)
    node = describe_node()
    (out / "node.json").write_text(node.to_json())
    (out / "summary.txt").write_text(summary_text(node))
    description, missing = system_description(node, 1)
    (out / "mlperf_system.json").write_text(json.dumps(description, indent=4) + "\n")
    (out / "mlperf_missing.txt").write_text("\n".join(missing) + "\n")

    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    capture = [sys.executable, "-m", "hpcrepro.detect", "--json"]
    ours = best_of(3, capture, env)
    timing = [f"python3 -m hpcrepro.detect --json: {ours:.3f} s (best of 3)"]
    reports = {"summary.txt": (out / "summary.txt").read_text()}
    if shutil.which("nvidia-smi"):
        anchor = best_of(3, ["nvidia-smi", "-q"])
        timing.append(f"anchor nvidia-smi -q: {anchor:.3f} s (best of 3)")
        timing.append(f"ratio hpcrepro/anchor: {ours / anchor:.2f}")
        csv_text = smi(f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits")
        nvlink_text = smi("nvlink", "-s")
        (out / "nvidia-smi.csv").write_text(csv_text)
        (out / "nvlink.txt").write_text(nvlink_text)
        (out / "topo.txt").write_text(smi("topo", "-m"))
        checks = crosscheck(node, csv_text, nvlink_text)
        (out / "crosscheck.txt").write_text("\n".join(checks) + "\n")
        mismatches = [line for line in checks if not line.startswith("ok")]
        reports["crosscheck.txt"] = (
            f"{len(checks) - len(mismatches)} of {len(checks)} values agree with nvidia-smi\n"
            + "".join(f"{line}\n" for line in mismatches)
        )
    else:
        timing.append("no nvidia-smi on this machine: no anchor, no cross-check")
    (out / "timing.txt").write_text("\n".join(timing) + "\n")
    reports["timing.txt"] = (out / "timing.txt").read_text()
    for name, text in reports.items():
        print(f"== {name}\n{text}")
    print(f"== node.json ({out / 'node.json'})")
    print((out / "node.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
