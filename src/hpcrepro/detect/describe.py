"""Describe the node this process runs on: host facts plus GPU facts, with the time of capture."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import Any

import hpcrepro
from hpcrepro.detect import host
from hpcrepro.detect.model import NodeDescription
from hpcrepro.detect.nvml import read_gpus


def describe_node(root: Path = Path("/"), nvml: Any = None) -> NodeDescription:
    report = read_gpus(nvml)
    return NodeDescription(
        hostname=socket.gethostname(),
        captured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu=host.read_cpu(root),
        nvml=report.info,
        memory_bytes=host.read_memory_bytes(root),
        os_name=host.read_os_name(root),
        kernel=host.read_kernel(),
        slurm_version=host.read_slurm_version(),
        slurm_node=os.environ.get("SLURMD_NODENAME") or None,
        infiniband=host.read_infiniband(root),
        gpus=report.gpus,
        hpcrepro_version=hpcrepro.__version__,
    )
