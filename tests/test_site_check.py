"""check_site and site_text on probe objects made by hand: every finding and its fix, every
origin comment, and the parsers of sinfo, srun --mpi=list and sacctmgr on real outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from hpcrepro.site import Site
from hpcrepro.site_check import Needs, check_site
from hpcrepro.site_init import site_text
from hpcrepro.site_probe import (
    ClusterProbe,
    NodeReport,
    Partition,
    gpus_in_gres,
    parse_associations,
    parse_mpi_list,
    parse_node_report,
    parse_sinfo,
)

DATA, LOGS = "/lustre/imagenet", "/lustre/hpcrepro"
MARKER = "/lustre/.hpcrepro-shared-abc"
GPU = Partition("gpu", True, True, 16, ("gpu:a100:8(S:0-1)",), 8)
SMALL = Partition("small", False, True, 4, ("gpu:4",), 4)
FILES = [f"{DATA}/{name}" for name in ("train.rec", "train.idx", "val.rec", "val.idx")]


def node(**changes: object) -> NodeReport:
    report = NodeReport(
        node="gpu001",
        tools={"enroot": "/usr/bin/enroot"},
        seen={MARKER: True, DATA: True, **{path: True for path in FILES}},
        drop_caches=(0, ""),
    )
    return replace(report, **changes)  # type: ignore[arg-type]


def probe(**changes: object) -> ClusterProbe:
    base = ClusterProbe(
        partitions=[GPU, SMALL],
        pyxis=True,
        mpi_plugins=["pmix", "none", "pmi2"],
        associations=[("proj1", "normal,high"), ("proj2", "normal")],
        node=node(),
        markers={LOGS: MARKER},
        user="alice",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def site(**values: object) -> Site:
    data = {
        "partition": "gpu",
        "gpu_request": "gpus-per-node",
        "dataset_dir": DATA,
        "log_dir": LOGS,
        "account": "proj1",
        **values,
    }
    return Site.model_validate(data)


def keys(findings: list) -> list[tuple[str, str]]:
    return [(f.level, f.key) for f in findings]


def test_a_site_that_fits_the_cluster_has_no_findings() -> None:
    assert check_site(site(), probe(), Needs("dgxa100_8x8 r3.0", 8, 8)) == []


def test_an_unknown_partition_names_close_matches() -> None:
    (finding,) = check_site(site(partition="gpus"), probe())
    assert finding.level == "error" and finding.key == "partition"
    assert "'gpus' is not one sinfo lists" in finding.problem
    assert finding.fix.startswith("did you mean gpu?") and "partitions: gpu, small" in finding.fix


def test_too_few_gpus_or_nodes_for_the_system() -> None:
    findings = check_site(site(partition="small"), probe(), Needs("dgxa100_8x8 r3.0", 8, 8))
    problems = [f.problem for f in findings]
    assert "partition 'small' has 4 node(s), dgxa100_8x8 r3.0 needs 8" in problems
    assert any(
        "have 4 GPU(s) (GRES gpu:4), dgxa100_8x8 r3.0 needs 8 per node" in p for p in problems
    )


def test_gpu_request_must_match_the_partitions_gres() -> None:
    no_gres = replace(GPU, gres=(), gpus_per_node=None)
    (finding,) = check_site(site(), probe(partitions=[no_gres]))
    assert finding.key == "gpu_request" and "set gpu_request: none" in finding.fix
    (warning,) = check_site(site(gpu_request="none"), probe())
    assert warning.level == "warning" and "gpus-per-node" in warning.fix


def test_pyxis_and_its_enroot_and_apptainer() -> None:
    assert keys(check_site(site(), probe(pyxis=False))) == [("error", "runtime")]
    (finding,) = check_site(site(), probe(node=node(tools={})))
    assert "enroot is not on gpu001" in finding.problem
    (finding,) = check_site(site(runtime="apptainer", image="/x.sif"), probe())
    assert "neither apptainer nor singularity is on gpu001" in finding.problem
    assert check_site(site(runtime="none"), probe(pyxis=False, node=node(tools={}))) == []


def test_mpi_account_and_qos_come_from_slurm() -> None:
    (finding,) = check_site(site(mpi="pmi3"), probe())
    assert finding.key == "mpi" and "pmix, none, pmi2" in finding.fix
    (finding,) = check_site(site(account="proj3"), probe())
    assert "not one of alice's" in finding.problem and "proj1, proj2" in finding.fix
    (finding,) = check_site(site(qos="urgent"), probe())
    assert finding.key == "qos" and finding.fix == "allowed: high, normal"
    assert check_site(site(account="whatever"), probe(associations=[])) == []  # no accounting


def test_data_set_visibility_on_the_node() -> None:
    (finding,) = check_site(site(), probe(node=node(seen={MARKER: True})))
    assert finding.problem == f"{DATA} is not visible on gpu001"
    partial = {MARKER: True, DATA: True, FILES[0]: True}
    (finding,) = check_site(site(), probe(node=node(seen=partial)))
    assert "has no train.idx, val.rec, val.idx on gpu001" in finding.problem
    # with the raw ImageNet, the prep stage makes the data set: the raw folder must be seen
    raw = {MARKER: True, "/lustre/raw": True}
    assert check_site(site(imagenet_dir="/lustre/raw"), probe(node=node(seen=raw))) == []
    (finding,) = check_site(site(imagenet_dir="/lustre/raw"), probe(node=node(seen={MARKER: True})))
    assert (
        finding.key == "imagenet_dir" and "/lustre/raw is not visible on gpu001" in finding.problem
    )


def test_log_dir_must_be_shared() -> None:
    (finding,) = check_site(site(), probe(node=node(seen={**node().seen, MARKER: False})))
    assert finding.key == "log_dir" and "is not shared" in finding.problem
    assert "not /tmp or a local disk" in finding.fix
    (finding,) = check_site(site(), probe(markers={}, unwritable={LOGS: "cannot write"}))
    assert "cannot test whether" in finding.problem


def test_placeholders_are_errors() -> None:
    placeholder = "/PLACEHOLDER/set-dataset_dir-in-site.yaml"
    (finding,) = check_site(site(dataset_dir=placeholder), probe())
    assert finding.key == "dataset_dir" and "placeholder" in finding.problem


def test_a_cache_drop_that_fails_on_the_node() -> None:
    failed = node(drop_caches=(1, "sudo: a password is required"))
    (finding,) = check_site(site(), probe(node=failed))
    assert finding.key == "drop_caches_command"
    assert "(exit 1: sudo: a password is required)" in finding.problem
    assert "drop_caches_command: null" in finding.fix
    assert check_site(site(drop_caches_command=None), probe(node=failed)) == []


def test_no_node_answer_is_one_error() -> None:
    (finding,) = check_site(site(), probe(node=None, node_error="srun: error: Invalid account"))
    assert "no compute node answered the probe step: srun: error: Invalid account" in (
        finding.problem
    )


def test_site_text_says_where_every_value_came_from(tmp_path: Path) -> None:
    text = site_text(
        probe(associations=[("proj1", "normal")], markers={"/lustre": MARKER}),
        partition=None,
        candidates=[Path("/lustre")],
        dataset_dir=None,
        drop_caches="sudo /sbin/sysctl vm.drop_caches=3",
        stamp="T",
    )
    lines = {line.split(":")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert lines["partition"].endswith(
        "# sinfo: the default partition, 16 node(s), GRES gpu:a100:8(S:0-1)"
    )
    assert '"gpus-per-node"' in lines["gpu_request"] and '"pyxis"' in lines["runtime"]
    assert "enroot on gpu001: /usr/bin/enroot" in lines["runtime"]
    assert lines["mpi"].startswith('mpi: "pmix"  # srun --mpi=list: pmix, none, pmi2')
    assert lines["account"] == 'account: "proj1"  # sacctmgr: alice\'s only account'
    assert '"/lustre/hpcrepro"' in lines["log_dir"] and "seen on gpu001" in lines["log_dir"]
    assert "PLACEHOLDER/set-dataset_dir-in-site.yaml" in lines["dataset_dir"]
    assert "not determined" in lines["dataset_dir"]
    assert "it ran on gpu001" in lines["drop_caches_command"]
    loaded = yaml.safe_load(text)
    assert Site.model_validate(loaded).partition == "gpu"
    # what cannot be told is a commented line with its note, never a guess
    several = site_text(
        probe(node=node(drop_caches=(1, "denied"))),
        partition="small",
        candidates=[Path("/tmp")],
        dataset_dir=Path(DATA),
        drop_caches="x",
        stamp="T",
    )
    assert (
        "# account: VALUE  # not determined: sacctmgr lists several accounts for alice: "
        "proj1, proj2; pick one" in several
    )
    assert "# drop_caches_command: VALUE  # not determined: the default 'x' failed" in several
    assert "/PLACEHOLDER/set-log_dir-in-site.yaml" in several and "/tmp (not tested)" in several
    assert 'partition: "small"  # --partition' in several


def test_parsers_read_slurms_real_output() -> None:
    sinfo = "debug*|up|2|(null)\nbatch|up|2|(null)\ngpu|up|3|gpu:h100:8(S:0-1)\ngpu|down|1|gpu:4\n"
    parts = parse_sinfo(sinfo)
    assert [(p.name, p.default, p.nodes, p.gpus_per_node) for p in parts] == [
        ("debug", True, 2, None),
        ("batch", False, 2, None),
        ("gpu", False, 4, 8),
    ]
    assert gpus_in_gres("nvme:1,gpu:2") == 2 and gpus_in_gres("(null)") is None
    mpi = (
        "MPI plugin types are...\n\tpmix\n\tnone\n\tpmi2\nspecific pmix plugin versions "
        "available: pmix_v4\n"
    )
    assert parse_mpi_list(mpi) == ["pmix", "none", "pmi2", "pmix_v4"]
    assert parse_mpi_list("srun: MPI types are...\nsrun: mpi/none\nsrun: mpi/pmi2\n") == [
        "none",
        "pmi2",
    ]
    assert parse_associations("root|normal\nproj|\n") == [("root", "normal"), ("proj", "")]
    report = parse_node_report(
        "node n1\ntool enroot /bin/enroot\nseen /a\nunseen /b\ndrop 1\ndropout no\n"
    )
    assert report == NodeReport(
        "n1", {"enroot": "/bin/enroot"}, {"/a": True, "/b": False}, (1, "no")
    )
