"""The neuron wheelhouse's pure parts: the base inventory, stub wheels, the guards."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from smneuron.errors import ConfigurationError
from smneuron.tools.build.wheelhouse import (
    BaseInventory,
    WheelhouseError,
    _stub_version,
    build_base_wheelhouse,
    build_wheelhouse,
    check_base_only,
    write_stub_wheel,
)

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = {
    "python": "3.10",
    "glibc": "2.35",
    "packages": {
        "torch": "2.8.0",
        "torch_neuronx": "2.9.0.2.13.26312+8e870898",
        "Jinja2": "3.1.6",
        "setuptools": "69.5.1",
        "python-apt": "2.4.0+ubuntu4",
        "odd": "not a version",
    },
    "requires": {
        "torch": ["filelock", "setuptools; python_version >= '3.12'"],
        "jinja2": ["MarkupSafe>=2.0"],
    },
}


def inventory(**changes) -> BaseInventory:
    data = {**INVENTORY, **changes}
    return BaseInventory.from_json("dlc:tag", "noise line\n" + json.dumps(data))


def test_inventory_reads_the_base_and_its_target():
    base = inventory()
    assert base.packages["torch-neuronx"] == "2.9.0.2.13.26312+8e870898"
    assert base.packages["jinja2"] == "3.1.6"
    # Only requirements on the venv's own packaging tools are kept for the stubs.
    assert base.tool_requires == {"torch": ["setuptools; python_version >= '3.12'"]}
    assert (base.target.abi, base.target.platforms[0]) == ("cp310", "manylinux_2_35_x86_64")


def test_locked_leaves_out_packaging_tools_and_invalid_versions():
    locked = inventory().locked()
    assert "setuptools" not in locked and "odd" not in locked
    assert locked["torch"] == "2.8.0"
    assert locked["python-apt"] == "2.4.0+ubuntu4"


def test_inventory_that_is_not_json_is_an_error():
    with pytest.raises(WheelhouseError, match="cannot read the inventory of dlc:tag"):
        BaseInventory.from_json("dlc:tag", "python3: not found")


def test_stub_versions_match_only_the_stub():
    assert _stub_version("2.8.0") == "2.8.0+smneuronbase"
    assert _stub_version("2.13.0+cpu") == "2.13.0+cpu.smneuronbase"


def test_stub_wheel_is_metadata_only(tmp_path):
    path = write_stub_wheel(tmp_path, "torch-neuronx", "2.8.0+smneuronbase", ["setuptools>=77"])
    assert path.name == "torch_neuronx-2.8.0+smneuronbase-py3-none-any.whl"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        metadata = archive.read("torch_neuronx-2.8.0+smneuronbase.dist-info/METADATA").decode()
    assert all(".dist-info/" in name for name in names)
    assert "Name: torch-neuronx\nVersion: 2.8.0+smneuronbase\n" in metadata
    assert "Requires-Dist: setuptools>=77\n" in metadata


@pytest.mark.parametrize(
    "wheel",
    [
        "torch-2.8.0-cp310-cp310-manylinux_2_28_x86_64.whl",
        "torch_neuronx-2.9.0.2.13.26312+8e870898-py3-none-any.whl",
        "nvidia_cublas_cu12-12.8.4.1-py3-none-manylinux_2_27_x86_64.whl",
    ],
)
def test_wheelhouse_with_the_neuron_stack_or_cuda_is_refused(tmp_path, wheel):
    (tmp_path / "flask-3.1.3-py3-none-any.whl").touch()
    (tmp_path / wheel).touch()
    with pytest.raises(WheelhouseError, match="must come from the Neuron DLC"):
        check_base_only(tmp_path, inventory())


def test_wheelhouse_without_the_neuron_stack_passes(tmp_path):
    (tmp_path / "flask-3.1.3-py3-none-any.whl").touch()
    check_base_only(tmp_path, inventory())


def test_neuron_wheelhouse_needs_its_base():
    with pytest.raises(ConfigurationError, match="made against its base image"):
        build_wheelhouse("neuron", ROOT)


def test_base_without_torch_neuronx_is_not_a_neuron_dlc():
    base = inventory(packages={"torch": "2.8.0"})
    with pytest.raises(WheelhouseError, match="has no torch-neuronx"):
        build_base_wheelhouse(ROOT, base, ("training",))


def test_stub_wheel_declares_the_base_packages_extras(tmp_path):
    """``datasets`` asks for ``fsspec[http]``: the stub must make pip fetch aiohttp if absent."""
    base = inventory(
        packages={**INVENTORY["packages"], "fsspec": "2025.9.0"},
        requires={
            **INVENTORY["requires"],
            "fsspec": ['aiohttp!=4.0.0a0,!=4.0.0a1; extra == "http"', "requests; extra == 'http'"],
        },
    )
    assert base.extra_requires == {
        "fsspec": ['aiohttp!=4.0.0a0,!=4.0.0a1; extra == "http"', "requests; extra == 'http'"]
    }
    path = write_stub_wheel(
        tmp_path, "fsspec", "2025.9.0+smneuronbase", base.extra_requires["fsspec"]
    )
    with zipfile.ZipFile(path) as archive:
        metadata = archive.read("fsspec-2025.9.0+smneuronbase.dist-info/METADATA").decode()
    assert "Provides-Extra: http\n" in metadata
    assert 'Requires-Dist: aiohttp!=4.0.0a0,!=4.0.0a1; extra == "http"\n' in metadata


# --------------------------------------------------------------------------------------------
# The resolution steps (pip replaced by a script of what it could not fit)


@pytest.fixture
def resolution(tmp_path):
    from smneuron.tools.build.wheelhouse import BaseResolution

    return BaseResolution.start(inventory(), {"fsspec": "2024.6.1"}, tmp_path / "staging")


def test_resolution_starts_with_stubs_and_pins_of_the_base(resolution):
    stubs = sorted(p.name.split("-")[0] for p in resolution.stubs.glob("*.whl"))
    assert stubs == ["jinja2", "python_apt", "torch", "torch_neuronx"]
    lines = resolution.resolve_constraints.read_text().splitlines()
    assert "torch==2.8.0+smneuronbase" in lines
    assert "setuptools==69.5.1" in lines and "fsspec==2024.6.1" in lines


def test_each_misfit_gets_its_own_step(resolution, monkeypatch):
    from smneuron.tools.build import wheelhouse

    built = []
    monkeypatch.setattr(wheelhouse, "_build_sdist_wheel", lambda spec, dest: built.append(spec))
    script = iter(["setuptools", "jinja2", "fsspec", None])
    monkeypatch.setattr(wheelhouse, "_download", lambda *args: next(script))
    resolution.download(["fsspec", "jinja2"])
    lines = resolution.resolve_constraints.read_text().splitlines()
    assert "setuptools" not in resolution.tools and not any("setuptools" in x for x in lines)
    assert "jinja2" not in resolution.locked  # the venv gets its own copy
    assert not any(p.name.startswith("jinja2") for p in resolution.stubs.glob("*.whl"))
    assert built == ["fsspec==2024.6.1"] and resolution.built == {"fsspec"}


def test_a_misfit_of_the_neuron_stack_or_a_second_sdist_miss_is_an_error(resolution, monkeypatch):
    from smneuron.tools.build import wheelhouse

    with pytest.raises(WheelhouseError, match="do not fit torch 2.8.0"):
        resolution.settle("torch")
    monkeypatch.setattr(wheelhouse, "_build_sdist_wheel", lambda spec, dest: None)
    resolution.settle("oddball")
    with pytest.raises(WheelhouseError, match="even after building it from source"):
        resolution.settle("oddball")


def test_locks_pin_every_requirement_to_the_base_or_the_wheel(resolution):
    wheel = resolution.staging / "fsspec-2024.6.1-py3-none-any.whl"
    wheel.write_bytes(b"")
    resolution.write_locks({"training": ["fsspec", "jinja2"]})
    assert (resolution.staging / "requirements-training.txt").read_text().splitlines() == [
        "fsspec==2024.6.1",
        "jinja2==3.1.6",
    ]
    lock = (resolution.staging / "constraints.txt").read_text()
    assert "torch==2.8.0\n" in lock and "fsspec==2024.6.1\n" in lock
    assert not resolution.stubs.exists() and not resolution.resolve_constraints.exists()
