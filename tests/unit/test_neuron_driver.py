"""The host driver check that `serve` and `train` run first on Neuron (fake /sys and modinfo)."""

from __future__ import annotations

import pytest

from smneuron.neuron.driver import (
    MIN_DRIVER,
    DriverTooOld,
    check_driver,
    check_host_driver,
    host_driver_version,
    parse_version,
)


def sys_version(tmp_path, text: str | None):
    path = tmp_path / "sys" / "module" / "neuron" / "version"
    if text is not None:
        path.parent.mkdir(parents=True)
        path.write_text(text + "\n")
    return path


def test_loaded_module_version_wins_over_modinfo(tmp_path):
    path = sys_version(tmp_path, "2.27.4.0")
    assert host_driver_version(path, modinfo=lambda: "2.99.0.0") == "2.27.4.0"
    assert host_driver_version(tmp_path / "absent", modinfo=lambda: "2.26.5.0") == "2.26.5.0"
    assert host_driver_version(tmp_path / "absent", modinfo=lambda: None) is None


def test_versions_compare_numerically():
    assert parse_version("2.27.4.0-dkms") == (2, 27, 4, 0)
    assert parse_version("2.9.1") < parse_version("2.27.4.0")
    with pytest.raises(ValueError):
        parse_version("unknown")


def test_an_old_driver_is_refused_with_both_versions_and_the_fix():
    with pytest.raises(DriverTooOld) as err:
        check_driver("2.19.64.0", "2.31.24.0-0b044f4ce", where="ml.inf2.xlarge")
    message = err.value.message
    assert "Neuron driver 2.19.64.0 is older than 2.27.4.0" in message
    assert "runtime 2.31.24.0-0b044f4ce" in message
    assert "inference_ami_version" in message and "aws-neuronx-dkms" in message
    assert err.value.client_error  # the user fixes it: training writes a one-line failure


@pytest.mark.parametrize("driver", [MIN_DRIVER, "2.28.1.0", "3.0"])
def test_a_new_enough_driver_passes(driver):
    check_driver(driver, "2.31.24.0")


@pytest.mark.parametrize("driver", [None, "", "garbage"])
def test_no_or_unreadable_driver_is_not_refused(driver):
    check_driver(driver, "2.31.24.0")  # no Neuron driver: nothing to check (CPU path)


def test_check_host_driver_reads_the_host(tmp_path):
    with pytest.raises(DriverTooOld, match="2.20.0.0"):
        check_host_driver("2.31.24.0", sys_path=sys_version(tmp_path, "2.20.0.0"))
    check_host_driver("2.31.24.0", sys_path=tmp_path / "none", modinfo=lambda: None)
