"""`serve` on a Neuron host whose driver is too old: it exits before binding, /ping never 200."""

from __future__ import annotations

import pytest

from smneuron.neuron import driver
from smneuron.serving import entry


@pytest.fixture
def neuron_host(tmp_path, monkeypatch):
    monkeypatch.setenv("SMNEURON_ACCELERATOR", "neuron")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "opt_ml"))
    version = tmp_path / "version"
    monkeypatch.setattr(driver, "SYS_MODULE_VERSION", str(version))
    started = []
    # nginx + the model server start in run_stack: recording the call is "a stack started".
    monkeypatch.setattr(entry, "run_stack", lambda *a, **k: started.append("stack") or 0)
    return version, started


def test_old_driver_stops_serve_before_any_server_starts(neuron_host, capfd):
    version, started = neuron_host
    version.write_text("2.19.64.0\n")
    assert entry.main() == 1
    assert started == []  # nothing bound: SageMaker's health check never sees a 200
    out = "".join(capfd.readouterr())
    assert "serve cannot start" in out
    assert "Neuron driver 2.19.64.0 is older than 2.27.4.0" in out
    assert "inference_ami_version" in out


def test_cpu_serving_never_reads_the_driver(neuron_host, monkeypatch):
    version, started = neuron_host
    version.write_text("1.0.0\n")  # would be refused, but the CPU path does not look
    monkeypatch.setenv("SMNEURON_ACCELERATOR", "cpu")
    monkeypatch.setattr(
        driver, "check_host_driver", lambda *a, **k: pytest.fail("driver read on CPU")
    )
    entry.main()
    assert started  # a stack was started (the model is absent: /ping says 503 with why)
