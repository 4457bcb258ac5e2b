"""Two SageMaker "hosts" on this machine (loopback): torchrun + gloo, artifact on rank 0 only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from netutil import free_port

pytest.importorskip("transformers")

ROWS = "text,label\n" + "".join(
    f"free prize {i} call now,spam\nlunch at {i}?,ham\n" for i in range(16)
)
# Sorted as SageMaker sorts them, "127.0.0.1" is hosts[0]: the master, node rank 0.
HOSTS = ("localhost", "127.0.0.1")


@pytest.mark.slow
def test_two_hosts_train_together_and_only_rank_zero_writes_the_artifact(
    opt_ml_factory, tiny_model_dir
):
    port = str(free_port())
    trees, processes = {}, {}
    for host in HOSTS:
        tree = trees[host] = opt_ml_factory(host.replace(".", "_"))
        tree.model_channel(tiny_model_dir)
        tree.channel("train", {"d.csv": ROWS})
        tree.channel("validation", {"d.csv": ROWS})
        tree.hyperparameters(
            {"max_steps": 4, "per_device_train_batch_size": 4, "sequence_lengths": [16]}
        )
        tree.paths.resource_config.write_text(
            json.dumps({"current_host": host, "hosts": list(HOSTS), "network_interface_name": "lo"})
        )
        env = {**tree.environ, "OMP_NUM_THREADS": "1", "SMNEURON_MASTER_PORT": port}
        processes[host] = subprocess.Popen(
            [sys.executable, "-m", "smneuron.training"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    outputs = {}
    try:
        for host, process in processes.items():
            outputs[host], _ = process.communicate(timeout=300)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for host, process in processes.items():
        assert process.returncode == 0, outputs[host]
    master, worker = trees["127.0.0.1"], trees["localhost"]
    assert "--nnodes=2 --node_rank=0" in outputs["127.0.0.1"]
    assert "--nnodes=2 --node_rank=1" in outputs["localhost"]
    assert "--master_addr=127.0.0.1" in outputs["localhost"]
    assert "[rank 1]" in outputs["localhost"]
    assert "manifest.json" in master.model_files()
    assert master.paths.success.exists()
    assert worker.model_files() == []
    assert not worker.paths.success.exists()
    # Each host keeps its own checkpoint to resume from.
    for tree in (master, worker):
        assert (tree.paths.checkpoints / "checkpoint-4" / "trainer_state.json").is_file()
