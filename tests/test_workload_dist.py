"""Rank, world and rendezvous from the Slurm environment."""

from __future__ import annotations

import re
import socket
import threading

import pytest

from hpcrepro.errors import UserError
from hpcrepro.workload import dist
from hpcrepro.workload.dist import (
    DEFAULT_PORT,
    DEFAULT_RENDEZVOUS_TIMEOUT_S,
    Placement,
    expand_nodelist,
    gpu_index,
    join,
    master_address,
    master_port,
    placement_from_env,
    rendezvous_timeout,
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


def test_rendezvous_timeout_is_a_positive_number_of_seconds():
    assert rendezvous_timeout({}) == DEFAULT_RENDEZVOUS_TIMEOUT_S
    assert rendezvous_timeout({"HPCREPRO_RENDEZVOUS_TIMEOUT_S": "2.5"}) == 2.5
    for bad in ("0", "-3", "nan", "inf", "soon"):
        with pytest.raises(UserError, match=f"HPCREPRO_RENDEZVOUS_TIMEOUT_S='{bad}'"):
            rendezvous_timeout({"HPCREPRO_RENDEZVOUS_TIMEOUT_S": bad})
    env = {"SLURM_NTASKS": "2", "MASTER_ADDR": "h", "HPCREPRO_RENDEZVOUS_TIMEOUT_S": "7"}
    assert placement_from_env(env).rendezvous_timeout_s == 7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def placement(rank: int, world: int, port: int, timeout: float) -> Placement:
    return Placement(rank, world, rank, world, "127.0.0.1", port, timeout)


def test_a_task_left_alone_says_how_many_it_waits_for_then_gives_up(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(dist, "FIRST_REPORT_S", 0.2)
    port, said = free_port(), []
    with pytest.raises(UserError, match=r"timed out after 1\.5 s: still waiting for 2 of 3 tasks"):
        join(placement(0, 3, port, 1.5), said.append)
    assert said and f"rank 0 waiting for 2 of 3 tasks at 127.0.0.1:{port}" in said[0]
    with pytest.raises(
        UserError,
        match=re.escape(
            f"task 1 could not reach task 0's rendezvous at 127.0.0.1:{port} within 1 s"
        ),
    ):
        join(placement(1, 2, port, 1.0), said.append)


def test_tasks_that_all_start_join_one_store():
    pytest.importorskip("torch")
    port, stores = free_port(), {}

    def one(rank: int) -> None:
        stores[rank] = join(placement(rank, 2, port, 20), print)

    threads = [threading.Thread(target=one, args=(rank,)) for rank in (1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(stores) == [0, 1]
    assert stores[1].add(dist.JOINED_KEY, 0) == 2
