"""Worker layout: NeuronCores per worker, over-subscription, CPU workers; MMS settings."""

import json

import pytest

from smneuron.artifact.manifest import Manifest
from smneuron.errors import AcceleratorError
from smneuron.job import Paths
from smneuron.serving.layout import plan_layout
from smneuron.serving.runtime import Layout, claim_slot, mark_ready
from smneuron.serving.settings import ServingSettings
from smneuron.serving.stacks.mms import mms_properties, write_stub_model
from smneuron.serving.stacks.supervisor import Readiness


def manifest(cores: int = 1, batch: int = 4) -> Manifest:
    return Manifest(
        task="text-classification",
        backend="neuron",
        batch_size=batch,
        sequence_lengths=(64,),
        cores_per_model=cores,
    )


def settings(tmp_path, **values) -> ServingSettings:
    return ServingSettings(paths=Paths(tmp_path), **values)


def test_neuron_workers_are_cores_divided_by_cores_per_model(tmp_path):
    layout = plan_layout(settings(tmp_path), "neuron", manifest(2), visible_cores=range(4, 10))
    assert layout.workers == 3
    assert layout.core_ranges == ((4, 5), (6, 7), (8, 9))
    assert layout.http_threads >= 4


def test_oversubscription_fails_fast_with_the_numbers(tmp_path):
    with pytest.raises(AcceleratorError, match="3 worker.*2 NeuronCore.*6 cores.*4 are visible"):
        plan_layout(settings(tmp_path, workers=3), "neuron", manifest(2), visible_cores=range(4))


def test_cpu_layout_from_settings(tmp_path):
    layout = plan_layout(settings(tmp_path, workers=2, threads_per_worker=8), "cpu", None, cpus=8)
    assert (layout.workers, layout.core_ranges, layout.http_threads) == (2, (), 8)
    assert layout.torch_threads == 4
    default = plan_layout(settings(tmp_path), "cpu", manifest(batch=4), cpus=2)
    assert (default.workers, default.torch_threads, default.http_threads) == (2, 1, 8)


def test_layout_roundtrip_and_slots(tmp_path):
    layout = Layout("neuron", 2, ((0,), (1,)), 16, None)
    layout.write(tmp_path)
    assert Layout.read(tmp_path) == layout
    first, handle_a = claim_slot(tmp_path, 2)
    assert first == 0
    readiness = Readiness(tmp_path, 2)
    assert readiness.check() == (False, "the model is loading (0 of 2 workers ready)")
    mark_ready(tmp_path, 0)
    mark_ready(tmp_path, 1)
    assert readiness.check() == (True, "2 of 2 workers ready")
    (tmp_path / "ready-1.json").write_text(json.dumps({"pid": 2**22 + 12345}))  # a dead worker
    assert readiness.check() == (True, "1 of 2 workers ready")
    handle_a.close()


def test_mms_sizes_and_workers_follow_settings(tmp_path):
    props = mms_properties(
        settings(tmp_path, max_payload_mb=20, model_server_timeout=90),
        Layout("cpu", 3),
        20001,
        20002,
        tmp_path,
    )
    assert int(props["max_request_size"]) > 20 * 1024 * 1024
    assert int(props["max_response_size"]) >= 100 * 1024 * 1024
    assert props["default_workers_per_model"] == "3"
    assert props["default_response_timeout"] == "90"
    assert props["inference_address"] == "http://127.0.0.1:20001"
    stub = write_stub_model(tmp_path)
    mar = json.loads((stub / "MAR-INF" / "MANIFEST.json").read_text())
    assert mar["model"]["handler"] == "smneuron.serving.stacks.mms_service:handle"


def test_mms_classpath_puts_our_reply_decoder_before_the_jar(tmp_path, monkeypatch):
    from smneuron.serving.stacks import mms

    monkeypatch.setattr(mms, "classes_dir", lambda: tmp_path / "decoder")
    command = mms.jvm_command(settings(tmp_path), tmp_path, tmp_path / "c", tmp_path / "l")
    class_path = command[command.index("-cp") + 1].split(":")
    assert class_path[0] == str(tmp_path / "decoder")
    assert class_path[-1].endswith("mms/frontend/*")
    monkeypatch.setattr(mms, "classes_dir", lambda: None)  # no JDK: MMS's own decoder
    command = mms.jvm_command(settings(tmp_path), tmp_path, tmp_path / "c", tmp_path / "l")
    assert command[command.index("-cp") + 1].startswith(".:")


def test_mms_decoder_without_javac_or_prebuilt_warns_and_falls_back(tmp_path, monkeypatch, caplog):
    from smneuron.serving.stacks import mms_decoder

    monkeypatch.setattr(mms_decoder, "find_javac", lambda: None)
    found = mms_decoder.classes_dir(prebuilt=tmp_path / "none", cache_root=tmp_path / "cache")
    assert found is None
    assert "MMS runs with its own reply decoder" in caplog.text


def test_java_programs_come_from_java_home_first_then_path(tmp_path, monkeypatch):
    from smneuron.serving.stacks import mms, mms_decoder

    on_path, home = tmp_path / "path", tmp_path / "jdk"
    for folder in (on_path, home / "bin"):
        folder.mkdir(parents=True)
        (folder / "java").write_text("#!/bin/sh\n")
        (folder / "java").chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert mms_decoder.java_tool("java") == str(home / "bin" / "java")
    monkeypatch.setattr(mms, "classes_dir", lambda: None)
    command = mms.jvm_command(settings(tmp_path), tmp_path, tmp_path / "c", tmp_path / "l")
    assert command[0] == str(home / "bin" / "java")  # the JVM that MMS runs on is that one
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    assert mms_decoder.java_tool("java") == str(on_path / "java")
    assert mms_decoder.java_tool("javac") is None


def test_serve_fails_fast_when_the_layout_does_not_fit(tmp_path, monkeypatch, capsys):
    from smneuron.serving import entry

    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.setenv("SMNEURON_ACCELERATOR", "neuron")
    monkeypatch.setenv("SMNEURON_LOG_FORMAT", "text")
    monkeypatch.setattr("smneuron.serving.layout.detect_neuron", lambda: None)
    assert entry.main() == 1
    assert "no Neuron device is visible" in capsys.readouterr().out


def test_serve_rejects_bad_settings(monkeypatch, capsys):
    from smneuron.serving import entry

    monkeypatch.setenv("SMNEURON_SERVER", "tornado")
    assert entry.main() == 1
    assert "SMNEURON_SERVER" in capsys.readouterr().err
