"""--neuron-devices -> docker device arguments, from a fake /dev tree."""

from __future__ import annotations

import argparse

import pytest

from smneuron.errors import AcceleratorError, ConfigurationError
from smneuron.tools.local.devices import (
    add_neuron_devices_argument,
    docker_device_args,
    list_neuron_devices,
)


@pytest.fixture
def dev(tmp_path):
    root = tmp_path / "dev"
    root.mkdir()
    for index in (0, 1, 2, 10):
        (root / f"neuron{index}").touch()
    for other in ("null", "neuron", "neuronx", "nvidia0"):
        (root / other).touch()
    return root


def test_auto_passes_every_neuron_device_in_order(dev):
    result = docker_device_args("auto", dev_root=dev)
    assert result.devices == ("/dev/neuron0", "/dev/neuron1", "/dev/neuron2", "/dev/neuron10")
    assert result.docker_args == [
        "--device",
        "/dev/neuron0",
        "--device",
        "/dev/neuron1",
        "--device",
        "/dev/neuron2",
        "--device",
        "/dev/neuron10",
    ]
    assert result.sdk_devices[0] == "/dev/neuron0:/dev/neuron0:rwm"
    assert result.env == {"SMNEURON_ACCELERATOR": "neuron"}


@pytest.mark.parametrize(
    "spec", ["/dev/neuron1,/dev/neuron0", "neuron0,neuron1", "1, 0", "/dev/neuron0,1,neuron1"]
)
def test_explicit_lists_in_any_spelling(dev, spec):
    result = docker_device_args(spec, dev_root=dev)
    assert result.devices == ("/dev/neuron0", "/dev/neuron1")
    assert result.docker_args == ["--device", "/dev/neuron0", "--device", "/dev/neuron1"]


def test_missing_device_names_what_exists(dev):
    with pytest.raises(AcceleratorError) as err:
        docker_device_args("/dev/neuron0,/dev/neuron5", dev_root=dev)
    message = str(err.value)
    assert "/dev/neuron5 not found" in message
    assert "/dev/neuron0, /dev/neuron1, /dev/neuron2, /dev/neuron10" in message


def test_auto_without_devices_says_how_to_run(tmp_path):
    (tmp_path / "dev").mkdir()
    with pytest.raises(AcceleratorError, match="no Neuron device under .*aws-neuronx-dkms"):
        docker_device_args("auto", dev_root=tmp_path / "dev")


@pytest.mark.parametrize("spec", ["/dev/nvidia0", "gpu", "/tmp/neuron0"])
def test_non_neuron_entries_are_refused(dev, spec):
    with pytest.raises(ConfigurationError):
        docker_device_args(spec, dev_root=dev)


def test_no_flag_means_no_devices(dev):
    assert docker_device_args(None, dev_root=dev).docker_args == []
    assert docker_device_args("", dev_root=dev).env == {}


def test_listing_and_flag(dev, tmp_path):
    assert [p.name for p in list_neuron_devices(dev)] == [
        "neuron0",
        "neuron1",
        "neuron2",
        "neuron10",
    ]
    assert list_neuron_devices(tmp_path / "absent") == []
    parser = argparse.ArgumentParser()
    add_neuron_devices_argument(parser)
    assert parser.parse_args(["--neuron-devices", "auto"]).neuron_devices == "auto"
    assert parser.parse_args([]).neuron_devices is None


def test_one_dev_listing_for_detection_and_local_runs():
    from smneuron import accelerator
    from smneuron.tools.local import devices

    assert devices.list_neuron_devices is accelerator.list_neuron_devices


@pytest.mark.parametrize("spec", ["0,2", "/dev/neuron1,/dev/neuron3", "neuron0,neuron1,neuron3"])
def test_non_contiguous_devices_are_refused(tmp_path, spec):
    dev = tmp_path / "dev"
    dev.mkdir()
    for index in range(4):
        (dev / f"neuron{index}").touch()
    with pytest.raises(AcceleratorError, match="--neuron-devices: .* is not contiguous"):
        docker_device_args(spec, dev_root=dev)
