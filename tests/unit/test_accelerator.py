"""NeuronCore counting and worker layout for every listed instance, from fake hardware views."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smneuron.accelerator import (
    INSTANCE_LAYOUTS,
    cores_from_neuron_ls,
    detect_backend,
    detect_instance_type,
    detect_neuron,
    family_of,
    format_core_range,
    parse_core_range,
    worker_core_ranges,
    worker_env,
)
from smneuron.errors import AcceleratorError, ConfigurationError

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"
NEURON_LS = FAKE / "bin" / "neuron-ls"
SM = "SM_CURRENT_INSTANCE_TYPE"
LISTED = (
    "inf2.xlarge",
    "inf2.8xlarge",
    "inf2.24xlarge",
    "inf2.48xlarge",
    "trn1.2xlarge",
    "trn1.32xlarge",
    "trn2.48xlarge",
)
EXPECTED_CORES = {
    "inf2.xlarge": 2,
    "inf2.8xlarge": 2,
    "inf2.24xlarge": 12,
    "inf2.48xlarge": 24,
    "trn1.2xlarge": 2,
    "trn1.32xlarge": 32,
    "trn2.48xlarge": 64,
}


def fake_dev(tmp_path: Path, devices: int) -> str:
    root = tmp_path / "dev"
    root.mkdir(parents=True)
    for index in range(devices):
        (root / f"neuron{index}").touch()
    (root / "null").touch()
    return str(root)


def no_dmi(tmp_path: Path) -> Path:
    return tmp_path / "no-such-product-name"


@pytest.mark.parametrize("instance", LISTED)
def test_layout_table_matches_neuron_ls_output(instance):
    layout = INSTANCE_LAYOUTS[instance]
    devices, cores = cores_from_neuron_ls((FAKE / "neuron_ls" / f"{instance}.json").read_text())
    assert (devices, cores) == (layout.devices, layout.neuron_cores)
    assert layout.neuron_cores == EXPECTED_CORES[instance]


@pytest.mark.parametrize("instance", LISTED)
def test_detect_neuron_reads_neuron_ls(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(FAKE / "neuron_ls" / f"{instance}.json"))
    inventory = detect_neuron(
        {SM: f"ml.{instance}"},
        dev_root=str(tmp_path / "none"),
        neuron_ls=str(NEURON_LS),
    )
    assert inventory is not None
    assert inventory.cores == tuple(range(EXPECTED_CORES[instance]))
    assert inventory.devices == INSTANCE_LAYOUTS[instance].devices
    assert inventory.instance_type == instance
    assert inventory.source == "neuron-ls --json-output"


@pytest.mark.parametrize("instance", LISTED)
def test_detect_neuron_falls_back_to_dev_nodes_times_family_cores(instance, tmp_path):
    layout = INSTANCE_LAYOUTS[instance]
    inventory = detect_neuron(
        {}, dev_root=fake_dev(tmp_path, layout.devices), neuron_ls="", instance_type=instance
    )
    assert inventory.core_count == layout.neuron_cores
    assert f"{layout.devices} x" in inventory.source


def test_instance_type_from_flag_env_then_dmi(tmp_path):
    product = tmp_path / "product_name"
    product.write_text("inf2.24xlarge\n")
    assert detect_instance_type({}, product_name_path=product) == "inf2.24xlarge"
    assert detect_instance_type({SM: "ml.trn1.32xlarge"}, product_name_path=product) == (
        "trn1.32xlarge"
    )
    environ = {SM: "ml.trn1.32xlarge", "SMNEURON_INSTANCE_TYPE": "ml.inf2.xlarge"}
    assert detect_instance_type(environ, product_name_path=product) == "inf2.xlarge"
    assert detect_instance_type(environ, explicit="trn2.48xlarge") == "trn2.48xlarge"
    product.write_text("m5.large\n")  # not a Neuron instance: nothing to say
    assert detect_instance_type({}, product_name_path=product) is None
    assert detect_instance_type({}, product_name_path=no_dmi(tmp_path)) is None


def test_dmi_product_name_picks_the_family_for_dev_fallback(tmp_path):
    product = tmp_path / "product_name"
    product.write_text("trn2.48xlarge\n")
    inventory = detect_neuron(
        {}, dev_root=fake_dev(tmp_path, 16), neuron_ls="", product_name_path=product
    )
    assert inventory.core_count == 64
    assert inventory.family == "trn2"


def test_family_names():
    assert family_of("ml.trn1n.32xlarge") == "trn1"
    assert family_of("inf2.xlarge") == "inf2"
    assert family_of("trn2.3xlarge") == "trn2"
    assert family_of("c5.xlarge") is None


def test_no_device_means_cpu(tmp_path):
    environ = {}
    probe = {"dev_root": str(tmp_path), "neuron_ls": "", "product_name_path": "/x"}
    assert detect_neuron(environ, **probe) is None
    assert detect_backend(environ, **probe) == "cpu"
    assert detect_backend({"SMNEURON_ACCELERATOR": "neuron"}, **probe) == "neuron"


def test_broken_neuron_ls_falls_back_to_dev_nodes(tmp_path, monkeypatch):
    broken = tmp_path / "broken.json"
    broken.write_text("not json")
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(broken))
    inventory = detect_neuron(
        {}, dev_root=fake_dev(tmp_path, 6), neuron_ls=str(NEURON_LS), instance_type="inf2.24xlarge"
    )
    assert inventory.core_count == 12


def test_platform_core_settings_narrow_the_inventory(tmp_path):
    probe = {"dev_root": fake_dev(tmp_path, 12), "neuron_ls": "", "instance_type": "inf2.48xlarge"}
    narrowed = detect_neuron({"NEURON_RT_VISIBLE_CORES": "4-7"}, **probe)
    assert narrowed.cores == (4, 5, 6, 7)
    assert narrowed.total_cores == 24
    assert detect_neuron({"NEURON_RT_NUM_CORES": "3"}, **probe).cores == (0, 1, 2)
    with pytest.raises(AcceleratorError) as err:
        detect_neuron({"NEURON_RT_VISIBLE_CORES": "20-27"}, **probe)
    assert "24-27" in str(err.value) and "inf2.48xlarge has 24" in str(err.value)
    with pytest.raises(AcceleratorError, match="NEURON_RT_NUM_CORES=30"):
        detect_neuron({"NEURON_RT_NUM_CORES": "30"}, **probe)


# --------------------------------------------------------------------------------------------
# Serving layout


@pytest.mark.parametrize(
    ("instance", "cores_per_model", "workers", "expected"),
    [
        ("inf2.xlarge", 1, None, ["0", "1"]),
        ("inf2.xlarge", 2, None, ["0-1"]),
        ("inf2.8xlarge", 1, 1, ["0"]),
        ("inf2.24xlarge", 2, None, ["0-1", "2-3", "4-5", "6-7", "8-9", "10-11"]),
        ("inf2.48xlarge", 1, None, [str(i) for i in range(24)]),
        ("inf2.48xlarge", 4, None, ["0-3", "4-7", "8-11", "12-15", "16-19", "20-23"]),
        ("inf2.48xlarge", 12, None, ["0-11", "12-23"]),
        ("trn1.2xlarge", 1, None, ["0", "1"]),
        ("trn1.32xlarge", 1, None, [str(i) for i in range(32)]),
        ("trn1.32xlarge", 8, 3, ["0-7", "8-15", "16-23"]),
        ("trn2.48xlarge", 2, None, [f"{i}-{i + 1}" for i in range(0, 64, 2)]),
    ],
)
def test_worker_core_ranges_per_instance(instance, cores_per_model, workers, expected):
    cores = range(INSTANCE_LAYOUTS[instance].neuron_cores)
    ranges = worker_core_ranges(cores, cores_per_model, workers, instance=instance)
    assert [format_core_range(group) for group in ranges] == expected
    flat = [core for group in ranges for core in group]
    assert len(flat) == len(set(flat)), "no core is shared between workers"


def test_over_subscription_names_instance_cores_and_workers():
    with pytest.raises(AcceleratorError) as err:
        worker_core_ranges(range(2), 1, 4, instance="inf2.xlarge")
    message = str(err.value)
    assert "inf2.xlarge" in message
    assert "4 worker(s) x 1 NeuronCore(s)" in message
    assert "need 4 cores, but 2 are visible (0-1)" in message
    assert "SAGEMAKER_MODEL_SERVER_WORKERS to at most 2" in message


def test_model_bigger_than_the_instance_is_refused():
    with pytest.raises(AcceleratorError) as err:
        worker_core_ranges(range(2), 4, instance="inf2.8xlarge")
    assert "need 4 cores, but 2 are visible" in str(err.value)
    assert "fewer cores per model" in str(err.value)


def test_worker_ranges_follow_platform_visible_cores():
    ranges = worker_core_ranges(parse_core_range("8-11"), 2)
    assert [format_core_range(group) for group in ranges] == ["8-9", "10-11"]


def test_worker_env_pins_each_child_and_leaves_the_parent_alone():
    parent = {"PATH": "/usr/bin", "NEURON_RT_NUM_CORES": "24"}
    child = worker_env(parent, (2, 3), threads=1)
    assert child["NEURON_RT_VISIBLE_CORES"] == "2-3"
    assert "NEURON_RT_NUM_CORES" not in child
    assert child["OMP_NUM_THREADS"] == "1" and child["PATH"] == "/usr/bin"
    assert parent == {"PATH": "/usr/bin", "NEURON_RT_NUM_CORES": "24"}
    assert "NEURON_RT_VISIBLE_CORES" not in worker_env({}, None)


def test_core_range_syntax():
    assert parse_core_range("0,2,4-5") == (0, 2, 4, 5)
    assert format_core_range((3,)) == "3"
    assert format_core_range((0, 2)) == "0,2"
    with pytest.raises(ConfigurationError):
        parse_core_range("3-1")


def test_neuron_ls_json_shapes():
    assert cores_from_neuron_ls("[]") == (0, 0)
    wrapped = {"neuron_devices": [{"neuron_device": 0, "nc_count": 2}]}
    assert cores_from_neuron_ls(json.dumps(wrapped)) == (1, 2)
    with pytest.raises(ValueError):
        cores_from_neuron_ls('"text"')


def test_fake_neuron_ls_is_executable():
    assert os.access(NEURON_LS, os.X_OK)


def test_docs_instance_table_matches_the_layouts():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "neuron.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name in cells[0].split(", ") if len(cells) >= 6 else ():
            if name in INSTANCE_LAYOUTS:
                rows[name] = cells
    assert set(rows) == set(INSTANCE_LAYOUTS)  # every size the code knows is documented
    for name, cells in rows.items():
        layout = INSTANCE_LAYOUTS[name]
        assert int(cells[1]) == layout.devices
        assert int(cells[2].split()[0]) == layout.neuron_cores
        assert int(cells[4]) == len(worker_core_ranges(range(layout.neuron_cores), 1))
        training = "—" if layout.family == "inf2" else str(layout.neuron_cores)
        assert cells[5] == training


# --------------------------------------------------------------------------------------------
# A container given a subset of the devices: the core ids are the runtime's, not 0..n-1


def subset_dev(tmp_path: Path, *indices: int) -> Path:
    root = tmp_path / "container-dev"
    root.mkdir(parents=True)
    for index in indices:
        (root / f"neuron{index}").touch()
    return root


def test_container_given_neuron1_has_cores_2_and_3_from_neuron_ls(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "FAKE_NEURON_LS_JSON", str(FAKE / "neuron_ls" / "inf2.24xlarge-device1.json")
    )
    probe = {"dev_root": subset_dev(tmp_path, 1), "neuron_ls": str(NEURON_LS)}
    inventory = detect_neuron({"SMNEURON_INSTANCE_TYPE": "inf2.24xlarge"}, **probe)
    assert inventory.cores == (2, 3) and inventory.devices == 1
    # serve pins one worker per core it has, with the ids the runtime accepts
    assert worker_core_ranges(inventory.cores, 1) == [(2,), (3,)]
    assert worker_env({}, (2, 3))["NEURON_RT_VISIBLE_CORES"] == "2-3"
    # and a platform-set range inside that set is accepted, one outside refused
    narrowed = detect_neuron({"NEURON_RT_VISIBLE_CORES": "2-3"}, **probe)
    assert narrowed.cores == (2, 3)
    with pytest.raises(AcceleratorError, match="names NeuronCore\\(s\\) 0-1 but this host has 2"):
        detect_neuron({"NEURON_RT_VISIBLE_CORES": "0-1"}, **probe)


def test_older_neuron_ls_without_core_ids_numbers_cores_by_device(tmp_path, monkeypatch):
    old = FAKE / "neuron_ls" / "inf2.24xlarge-devices2-3-old-format.json"
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(old))
    inventory = detect_neuron({}, dev_root=subset_dev(tmp_path, 2, 3), neuron_ls=str(NEURON_LS))
    assert inventory.cores == (4, 5, 6, 7)


def test_dev_fallback_numbers_cores_from_the_device_nodes_given(tmp_path):
    inventory = detect_neuron(
        {}, dev_root=subset_dev(tmp_path, 1), neuron_ls="", instance_type="inf2.24xlarge"
    )
    assert inventory.cores == (2, 3)
    trn2 = detect_neuron(
        {}, dev_root=subset_dev(tmp_path / "t", 3), neuron_ls="", instance_type="trn2.48xlarge"
    )
    assert trn2.cores == (12, 13, 14, 15)


def test_non_contiguous_visible_cores_are_refused(tmp_path):
    probe = {"dev_root": fake_dev(tmp_path, 2), "neuron_ls": "", "instance_type": "inf2.xlarge"}
    with pytest.raises(AcceleratorError, match="0,2 is not contiguous \\(missing 1\\)") as err:
        detect_neuron(
            {"NEURON_RT_VISIBLE_CORES": "0,2"}, **{**probe, "dev_root": fake_dev(tmp_path / "b", 4)}
        )
    assert "contiguous range" in str(err.value)
    assert detect_neuron({"NEURON_RT_VISIBLE_CORES": "1,0"}, **probe).cores == (0, 1)


def test_trn2_neuron_ls_counts_logical_cores(monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(FAKE / "neuron_ls" / "trn2.48xlarge.json"))
    data = json.loads((FAKE / "neuron_ls" / "trn2.48xlarge.json").read_text())
    assert {entry["nc_count"] for entry in data} == {4}  # as the Neuron LS guide prints it
    assert {entry["logical_neuroncore_config"] for entry in data} == {2}
    inventory = detect_neuron({}, dev_root=tmp_path, neuron_ls=str(NEURON_LS))
    assert inventory.cores == tuple(range(64))


# --------------------------------------------------------------------------------------------
# Instance type from resourceconfig.json, every current size


def test_instance_type_from_resourceconfig_json(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "current_instance_type": "ml.trn1.32xlarge"})
    )
    environ = {"SAGEMAKER_BASE_DIR": str(tmp_path)}
    assert detect_instance_type(environ, product_name_path=no_dmi(tmp_path)) == "trn1.32xlarge"
    # it wins over the training toolkit's variable, which this image never has
    environ[SM] = "ml.inf2.xlarge"
    assert detect_instance_type(environ, product_name_path=no_dmi(tmp_path)) == "trn1.32xlarge"
    # an explicit SMNEURON_INSTANCE_TYPE still wins
    environ["SMNEURON_INSTANCE_TYPE"] = "trn2.48xlarge"
    assert detect_instance_type(environ, product_name_path=no_dmi(tmp_path)) == "trn2.48xlarge"
    (config / "resourceconfig.json").write_text("{not json")
    assert (
        detect_instance_type(
            {"SAGEMAKER_BASE_DIR": str(tmp_path)}, product_name_path=no_dmi(tmp_path)
        )
        is None
    )


@pytest.mark.parametrize(
    ("instance", "family", "devices", "cores"),
    [
        ("inf2.xlarge", "inf2", 1, 2),
        ("inf2.8xlarge", "inf2", 1, 2),
        ("inf2.24xlarge", "inf2", 6, 12),
        ("inf2.48xlarge", "inf2", 12, 24),
        ("trn1.2xlarge", "trn1", 1, 2),
        ("trn1.32xlarge", "trn1", 16, 32),
        ("trn1n.32xlarge", "trn1", 16, 32),
        ("trn2.3xlarge", "trn2", 1, 4),
        ("trn2.48xlarge", "trn2", 16, 64),
        ("trn2n.48xlarge", "trn2", 16, 64),
        ("trn2u.48xlarge", "trn2", 16, 64),
    ],
)
def test_every_current_size(instance, family, devices, cores):
    layout = INSTANCE_LAYOUTS[instance]
    assert (layout.family, layout.devices, layout.neuron_cores) == (family, devices, cores)
    assert family_of(f"ml.{instance}") == family


def test_cores_per_model_above_one_is_refused_with_the_reason():
    from smneuron.accelerator import check_cores_per_model

    check_cores_per_model(1)
    with pytest.raises(ConfigurationError, match="a traced model runs on one NeuronCore"):
        check_cores_per_model(2)
