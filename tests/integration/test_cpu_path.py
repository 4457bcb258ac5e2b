"""The CPU path in a fresh interpreter: compile, load, run, import every module of the package,
and no Neuron package (torch_neuronx, torch_xla, neuronx-cc) gets loaded, even where the fake
torch_neuronx could be imported. The unit tier checks the same layering statically
(tests/unit/test_import_graph.py); this run proves it at run time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smneuron.tools import cli
from tinymodels import save_tiny_model

pytestmark = pytest.mark.slow

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random-weight spam classifier saved like a training job's model folder."""
    return save_tiny_model(tmp_path_factory.mktemp("checkpoint"))


def test_cpu_path_never_imports_neuron_packages(checkpoint, tmp_path):
    """Compile and load on CPU, then import every module of the package, in a fresh interpreter
    that COULD import the fake torch_neuronx: no Neuron package gets loaded."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from smneuron.tools import cli
        from smneuron.artifact.manifest import read_manifest
        from smneuron.artifact.backends import get_backend
        out = Path({str(tmp_path / "artifact")!r})
        assert cli.main(["compile", "--checkpoint", {str(checkpoint)!r}, "--output", str(out),
                         "--sequence-lengths", "16"]) == 0
        manifest = read_manifest(out)
        backend = get_backend(manifest.backend)
        graph = backend.load(manifest.graph_path(out, 16))
        import torch
        graph(*(torch.ones(1, 16, dtype=torch.long) for _ in manifest.input_names))
        import importlib, importlib.util, pkgutil, smneuron
        assert importlib.util.find_spec("torch_neuronx") is not None  # available, not used
        # Importing any module of the package (neuron/ included) loads no Neuron package.
        for info in pkgutil.walk_packages(smneuron.__path__, "smneuron."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("torch_neuronx", "torch_xla", "neuronxcc",
                                               "libneuronxla"))
        print(json.dumps({{"backend": manifest.backend, "neuron_modules": loaded}}))
        """
    )
    env = dict(os.environ)
    env.pop("SMNEURON_ACCELERATOR", None)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(FAKE / "torch-neuronx"), str(Path(cli.__file__).parents[2])]
            ),
            "SMNEURON_INSTANCE_TYPE": "",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"backend": "cpu", "neuron_modules": []}
