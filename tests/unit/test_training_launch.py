"""The torchrun command line for one and several hosts, and who writes the artifact."""

from __future__ import annotations

import pytest

from smneuron.env import ENV
from smneuron.errors import ConfigurationError
from smneuron.job import ResourceConfig
from smneuron.training import launch


def two_hosts(current: str) -> ResourceConfig:
    return ResourceConfig.from_dict(
        {"current_host": current, "hosts": ["algo-2", "algo-1"], "network_interface_name": "eth1"}
    )


def test_one_host_one_process_needs_no_launcher():
    plan = launch.plan(ResourceConfig())
    assert (plan.nnodes, plan.node_rank, plan.nproc_per_node, plan.world_size) == (1, 0, 1, 1)
    assert not plan.distributed
    assert not launch.needs_launch(plan, {})
    assert plan.env == {}


def test_second_of_two_hosts_gets_its_rank_and_the_first_host_as_master():
    plan = launch.plan(two_hosts("algo-2"), master_port=29400)
    command = launch.torchrun_command(plan, python="python3")
    assert command == [
        "python3",
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--node_rank=1",
        "--nproc_per_node=1",
        "--master_addr=algo-1",
        "--master_port=29400",
        "-m",
        "smneuron.training",
    ]
    assert plan.env == {"GLOO_SOCKET_IFNAME": "eth1", "NCCL_SOCKET_IFNAME": "eth1"}


def test_first_host_is_rank_zero_and_master():
    plan = launch.plan(two_hosts("algo-1"))
    command = launch.torchrun_command(plan, python="python3")
    assert "--node_rank=0" in command and "--master_addr=algo-1" in command
    assert launch.needs_launch(plan, {})


def test_several_processes_per_host_with_extra_env():
    plan = launch.plan(ResourceConfig(), nproc_per_node=32, env={"NEURON_CC_FLAGS": "-O1"})
    assert plan.world_size == 32
    command = launch.torchrun_command(plan, python="py", args=["--flag"])
    assert "--nproc_per_node=32" in command and command[-1] == "--flag"
    env = launch.worker_environ({"PATH": "/bin"}, plan)
    assert env == {"PATH": "/bin", "NEURON_CC_FLAGS": "-O1", ENV.TRAINING_WORKER: "1"}


def test_workers_do_not_launch_again():
    plan = launch.plan(two_hosts("algo-1"))
    environ = launch.worker_environ({}, plan)
    assert launch.is_worker(environ)
    assert not launch.needs_launch(plan, environ)


def test_only_global_rank_zero_writes_the_artifact():
    assert launch.is_rank_zero({})
    assert launch.is_rank_zero({ENV.RANK: "0", "LOCAL_RANK": "0"})
    assert not launch.is_rank_zero({ENV.RANK: "1", "LOCAL_RANK": "0"})


def test_worker_environment_is_a_copy():
    base = {"A": "1"}
    launch.worker_environ(base, launch.plan(ResourceConfig()))
    assert base == {"A": "1"}


def test_master_port_from_the_environment():
    assert launch.master_port({}) == 29500
    assert launch.master_port({ENV.MASTER_PORT: "29400"}) == 29400
    with pytest.raises(ConfigurationError, match="SMNEURON_MASTER_PORT: expected an integer"):
        launch.master_port({ENV.MASTER_PORT: "high"})
