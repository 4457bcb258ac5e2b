"""The load-time check refuses artifacts built by another Neuron stack or for another backend."""

from __future__ import annotations

import pytest

from smneuron.artifact.manifest import Manifest, check_compatible
from smneuron.errors import ArtifactError

HOST = {
    "torch": "2.8.0",
    "transformers": "4.55.4",
    "torch_neuronx": "2.9.0.2.13.26312+8e870898",
    "neuronx_cc": "2.24.8799.0+6f62ff7c",
}


def neuron_manifest(**versions) -> Manifest:
    return Manifest(
        task="text-classification",
        backend="neuron",
        batch_size=1,
        sequence_lengths=(32, 64),
        labels=("ham", "spam"),
        versions={**HOST, **versions},
        target="inf2",
    )


def test_same_stack_is_accepted():
    check_compatible(neuron_manifest(), "neuron", HOST)


def test_other_torch_neuronx_is_refused_with_both_versions():
    manifest = neuron_manifest(torch_neuronx="2.7.0.2.9.9357")
    with pytest.raises(ArtifactError) as err:
        check_compatible(manifest, "neuron", HOST)
    message = str(err.value)
    assert "torch_neuronx 2.7.0.2.9.9357 (artifact) != 2.9.0.2.13.26312+8e870898 (host)" in message
    assert "smneuron compile" in message and "docs/compatibility.md" in message


def test_other_neuronx_cc_is_refused():
    manifest = neuron_manifest(neuronx_cc="2.20.9961.0")
    with pytest.raises(ArtifactError, match=r"neuronx_cc 2.20.9961.0 \(artifact\) != 2.24"):
        check_compatible(manifest, "neuron", HOST)


def test_both_mismatches_are_listed_together():
    manifest = neuron_manifest(torch_neuronx="2.7.0.2.9.9357", neuronx_cc="2.20.9961.0")
    with pytest.raises(ArtifactError) as err:
        check_compatible(manifest, "neuron", HOST)
    assert "torch_neuronx" in str(err.value) and "neuronx_cc" in str(err.value)


def test_neuron_artifact_on_a_cpu_host_is_refused():
    with pytest.raises(ArtifactError) as err:
        check_compatible(neuron_manifest(), "cpu", {"torch": "2.13.0"})
    message = str(err.value)
    assert "compiled for backend 'neuron' but this host runs 'cpu'" in message
    assert "Use the neuron serving image" in message
    assert "smneuron compile --backend cpu" in message


def test_cpu_artifact_on_a_neuron_host_is_refused():
    manifest = Manifest(
        task="text-classification",
        backend="cpu",
        batch_size=1,
        sequence_lengths=(32,),
        versions={"torch": "2.13.0"},
    )
    with pytest.raises(ArtifactError, match="smneuron compile --backend neuron"):
        check_compatible(manifest, "neuron", HOST)


def test_torch_minor_mismatch_is_refused_on_neuron():
    with pytest.raises(ArtifactError, match=r"torch 2.7.1 \(artifact\) != 2.8.0 \(host\)"):
        check_compatible(neuron_manifest(torch="2.7.1"), "neuron", HOST)
