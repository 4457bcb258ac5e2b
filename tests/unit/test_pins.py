"""constraints/neuron.txt is the one place for the Neuron stack; the docs table follows it."""

from __future__ import annotations

import re
from pathlib import Path

from smneuron.tools.build.pins import read_pins

ROOT = Path(__file__).resolve().parents[2]
PINS = read_pins(ROOT / "constraints" / "neuron.txt")


def table_rows(section: str) -> dict[str, str]:
    """``| what | version |`` rows of one '## ' section of docs/compatibility.md."""
    text = (ROOT / "docs" / "compatibility.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and not set(cells[1]) <= {"-", " "}:
            rows[re.sub(r" \(.*\)$", "", cells[0]).lower()] = cells[1].strip("`")
    return rows


def test_every_neuron_pin_is_in_the_docs_table_with_the_same_version():
    rows = table_rows("Neuron")
    for name, version in PINS.packages.items():
        assert rows.get(name) == version, f"{name}: docs say {rows.get(name)}, pins {version}"
    assert rows["neuron sdk"] == PINS.facts["neuron-sdk"]
    assert rows["neuron runtime"] == PINS.facts["neuron-runtime"]


def test_dlc_tags_in_docs_match_the_pins():
    rows = table_rows("Neuron")
    assert rows["training base image"] == PINS.dlc_uri("training", "<region>")
    assert rows["serving base image"] == PINS.dlc_uri("inference", "<region>")
    assert f"sdk{PINS.facts['neuron-sdk']}" in PINS.facts["dlc-training"]
    assert f"py{PINS.facts['python'].replace('.', '')}" in PINS.facts["dlc-inference"]


def test_the_fake_torch_neuronx_claims_the_pinned_versions():
    fake = ROOT / "tests" / "resources" / "fake_neuron"
    assert (
        f'version = "{PINS.packages["torch-neuronx"]}"'
        in (fake / "torch-neuronx" / "pyproject.toml").read_text()
    )
    assert (
        f'version = "{PINS.packages["neuronx-cc"]}"'
        in (fake / "neuronx-cc" / "pyproject.toml").read_text()
    )


def test_cpu_rows_match_constraints_cpu():
    pins = dict(
        line.strip().split("==", 1)
        for line in (ROOT / "constraints" / "cpu.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    rows = table_rows("CPU")
    checked = [name for name in rows if name in pins]
    assert "torch" in checked and "transformers" in checked
    for name in checked:
        assert rows[name].startswith(pins[name]), f"{name}: docs {rows[name]}, pins {pins[name]}"


def test_driver_minimum_is_pinned_once_and_shown():
    from smneuron.neuron.driver import MIN_DRIVER

    assert PINS.facts["neuron-driver-min"] == MIN_DRIVER
    assert table_rows("Neuron")["oldest host neuron driver"] == MIN_DRIVER


def test_dlc_account_follows_the_published_region_table():
    from smneuron.tools.build.pins import dlc_registry

    tag = PINS.facts["dlc-inference"]
    assert PINS.dlc_uri("inference", "us-east-1") == (
        f"763104351884.dkr.ecr.us-east-1.amazonaws.com/{tag}"
    )
    assert PINS.dlc_uri("inference", "ap-east-1").startswith("871362719292.dkr.ecr.ap-east-1.")
    assert PINS.dlc_uri("inference", "me-central-1").startswith("914824155844.")
    assert dlc_registry("cn-north-1") == "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn"


def test_training_and_serving_images_share_one_sdk():
    sdk = f"sdk{PINS.facts['neuron-sdk']}"
    assert sdk in PINS.facts["dlc-training"] and sdk in PINS.facts["dlc-inference"]
    torch = PINS.packages["torch"]
    assert PINS.facts["dlc-training"].split(":")[1].startswith(f"{torch}-neuronx")
