"""Rank, world and rendezvous from the Slurm environment."""

from __future__ import annotations

import pytest

from hpcrepro.errors import UserError
from hpcrepro.workload.dist import (
    DEFAULT_PORT,
    Placement,
    expand_nodelist,
    gpu_index,
    master_address,
    master_port,
    placement_from_env,
)


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node1", ["node1"]),
        ("node[1-2]", ["node1", "node2"]),
        ("gpu[08-10,12]", ["gpu08", "gpu09", "gpu10", "gpu12"]),
        ("a[1-2],b3,c[7]", ["a1", "a2", "b3", "c7"]),
        ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
        ("login-[2-3]x", ["login-2x", "login-3x"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[1-", "node[a-b]", "node]1["])
def test_bad_nodelist_is_a_user_error_that_suggests_master_addr(bad):
    with pytest.raises(UserError, match="node list") as caught:
        expand_nodelist(bad)
    assert "MASTER_ADDR" in (caught.value.hint or "")


def test_master_address_prefers_env_then_first_node():
    assert master_address({"MASTER_ADDR": "10.0.0.5", "SLURM_JOB_NODELIST": "x[1-2]"}) == "10.0.0.5"
    assert master_address({"SLURM_JOB_NODELIST": "localhost,other"}) == "localhost"
    assert master_address({}) == "localhost"


def test_unresolvable_first_node_names_it_and_suggests_master_addr():
    with pytest.raises(UserError, match="no-such-node-hpcrepro7") as caught:
        master_address({"SLURM_JOB_NODELIST": "no-such-node-hpcrepro[7-8]"})
    assert "MASTER_ADDR" in (caught.value.hint or "")


def test_master_port_from_env_or_job_id():
    assert master_port({"MASTER_PORT": "23456"}) == 23456
    assert master_port({}) == DEFAULT_PORT
    one, two = master_port({"SLURM_JOB_ID": "4242"}), master_port({"SLURM_JOB_ID": "4243"})
    assert one != two and 1024 < one < 32768 and 1024 < two < 32768
    with pytest.raises(UserError, match="MASTER_PORT"):
        master_port({"MASTER_PORT": "http"})


def test_placement_from_slurm_env():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_TASKS_PER_NODE": "4(x2)",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_JOB_ID": "7",
    }
    place = placement_from_env(env)
    assert (place.rank, place.world_size, place.local_rank, place.local_world_size) == (5, 8, 1, 4)
    assert place.master_addr == "localhost" and place.master_port == master_port(env)
    assert placement_from_env({}).world_size == 1
    with pytest.raises(UserError, match="SLURM_PROCID"):
        placement_from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "2"})
    with pytest.raises(UserError, match="SLURM_NTASKS"):
        placement_from_env({"SLURM_NTASKS": "two"})


def test_gpu_index_binds_local_rank_or_the_single_visible_gpu():
    place = Placement(
        rank=3, world_size=4, local_rank=3, local_world_size=4, master_addr="h", master_port=1
    )
    assert gpu_index(place, 4) == 3
    assert gpu_index(place, 1) == 0
    with pytest.raises(UserError, match="sees only 2 GPUs"):
        gpu_index(place, 2)


def test_local_launcher_job_ids_get_their_own_port():
    ports = {master_port({"SLURM_JOB_ID": f"local{n}"}) for n in range(50)}
    assert len(ports) > 45 and all(1024 < port < 32768 for port in ports)
