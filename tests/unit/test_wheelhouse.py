"""Wheelhouse inputs: pins, per-image requirement lists, the CUDA-torch guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from smneuron.errors import ConfigurationError
from smneuron.tools.build.pins import read_pins
from smneuron.tools.build.wheelhouse import (
    WheelhouseError,
    check_no_cuda,
    pinned_requirements,
    repo_root,
)

ROOT = repo_root()


def test_every_image_requirement_is_pinned_and_torch_is_the_cpu_pin():
    requirements = pinned_requirements(ROOT, "cpu")
    pins = read_pins(ROOT / "constraints" / "cpu.txt").packages
    for image in ("training", "inference"):
        names = [line.split("==")[0] for line in requirements[image]]
        assert "torch" in names and "transformers" in names
        assert all(pins[name] for name in names)
    assert "sagemaker-inference" in [line.split("==")[0] for line in requirements["inference"]]
    assert "datasets" not in [line.split("==")[0] for line in requirements["inference"]]


def test_a_missing_pin_is_named(tmp_path: Path):
    (tmp_path / "constraints").mkdir()
    (tmp_path / "constraints" / "cpu.txt").write_text("torch==2.13.0\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["numpy>=1"]\n'
        "[project.optional-dependencies]\ntrain = []\nserve = []\n"
    )
    with pytest.raises(ConfigurationError, match="numpy"):
        pinned_requirements(tmp_path, "cpu")


def test_read_pins_refuses_a_range(tmp_path: Path):
    path = tmp_path / "c.txt"
    path.write_text("# comment\nNumPy==2.0  # why\nfoo>=1\n")
    with pytest.raises(ConfigurationError, match="c.txt:3: .*foo>=1"):
        read_pins(path)
    path.write_text("NumPy==2.0  # why\n#@ dlc-account = 1\n")
    assert read_pins(path).packages == {"numpy": "2.0"}
    assert read_pins(path).facts == {"dlc-account": "1"}


def test_a_cuda_torch_is_refused(tmp_path: Path):
    (tmp_path / "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    with pytest.raises(WheelhouseError, match="CUDA"):
        check_no_cuda(tmp_path)
    (tmp_path / "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl").unlink()
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    check_no_cuda(tmp_path)
