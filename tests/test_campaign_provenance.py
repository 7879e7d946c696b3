"""Provenance in campaign.json: recorded at submit (versions, Slurm, site file hash, image, NVIDIA's
code), completed at collection (what the jobs saw: nodes), carried into report.md and the HTML
report; manifests of older versions, which have none, still load."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest

from campaign_helpers import (
    SYSTEM,
    all_finished,
    cli_env,
    hpcrepro,
    make_site,
    sample_manifest,
    wait_for,
)
from hpcrepro import __version__
from hpcrepro.campaign import state as st
from hpcrepro.detect.host import parse_slurm_version
from hpcrepro.rounds import ROUNDS


def test_a_manifest_without_provenance_still_loads_and_stays_without() -> None:
    data = sample_manifest()
    data.pop("provenance", None)
    manifest = st.from_json(data)
    assert manifest.provenance is None
    assert "provenance" not in manifest.to_json()


def test_provenance_is_read_back_and_checked() -> None:
    data = sample_manifest()
    data["provenance"] = {"hpcrepro_version": "0.1.0", "site_sha256": "ab" * 32, "later": 1}
    manifest = st.from_json(data)
    assert manifest.provenance is not None and manifest.provenance.site_sha256 == "ab" * 32
    assert manifest.to_json()["provenance"]["later"] == 1  # a newer hpcrepro's key is kept
    data["provenance"] = {"nccl": 2.21}
    with pytest.raises(st.ShapeError, match=r"provenance\.nccl: should be a text"):
        st.from_json(data)


def _check_recorded(campaign: Path, site: Path) -> dict[str, str]:
    provenance = json.loads((campaign / "campaign.json").read_text())["provenance"]
    assert provenance["hpcrepro_version"] == __version__
    assert provenance["site_file"] == str(site)
    assert provenance["site_sha256"] == hashlib.sha256(site.read_bytes()).hexdigest()
    assert provenance["code_repository"] == ROUNDS["r2.1"].results_repository
    assert provenance["code_commit"] == ROUNDS["r2.1"].results_commit
    assert provenance["code_folder"].startswith("NVIDIA/benchmarks/resnet/implementations/")
    report = (campaign / "results" / "report.md").read_text()
    assert "## Provenance" in report and provenance["site_sha256"] in report
    html = (campaign / "results" / "report.html").read_text()
    assert provenance["code_commit"] in html and "data:image/png;base64," in html
    return provenance  # type: ignore[no-any-return]


def test_a_local_campaign_records_its_provenance(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", "--set", "nodes=1",
             "--set", "gpus_per_node=1", "--backend", "local", "--name", "prov", env=env)
    wait_for(all_finished("prov", env), 90, "campaign prov")
    provenance = _check_recorded(tmp_path / "logs" / "prov", site)
    assert "slurm_version" not in provenance  # the local backend asks no Slurm
    assert provenance["nodes"] == socket.gethostname()  # the local job's record of its node


@pytest.mark.slurm
def test_a_slurm_campaign_records_slurm_and_its_nodes(slurm_cluster, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path, slurm_cluster.env)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", "--set", "nodes=1",
             "--set", "gpus_per_node=2", "--name", "provslurm", env=env)
    wait_for(all_finished("provslurm", env), 120, "campaign provslurm")
    provenance = _check_recorded(tmp_path / "logs" / "provslurm", site)
    sinfo = subprocess.run(["sinfo", "--version"], capture_output=True, text=True,
                           env=slurm_cluster.env, check=True).stdout
    assert provenance["slurm_version"] == parse_slurm_version(sinfo)
    assert provenance["nodes"] in ("node1", "node2")  # sacct's node list of the training job
