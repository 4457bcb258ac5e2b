"""Security defaults of serving, each enforced: no pickle on a request path, Hugging Face
offline, no pip install at start unless opted in."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from smneuron.errors import ArtifactError, ClientError
from smneuron.serving import codecs
from smneuron.serving.safety import (
    OFFLINE_ENV,
    offline_environ,
    prepare_requirements,
)

SRC = Path(__file__).resolve().parents[3] / "src"
# What would let a request body run code: unpickling in any of its disguises.
UNSAFE = re.compile(
    r"allow_pickle\s*=\s*True|pickle\.loads?\(|^\s*import (c?pickle|dill|cloudpickle)\b"
    r"|^\s*from (c?pickle|dill|cloudpickle) import|torch\.load\((?![^)]*weights_only=True)"
    r"|yaml\.load\((?![^)]*Loader=yaml\.SafeLoader)|\bmarshal\.loads\(",
    re.MULTILINE,
)


def test_no_unpickling_anywhere_in_the_package():
    found = [
        f"{path.relative_to(SRC)}:{text[: match.start()].count(chr(10)) + 1}: {match.group(0)}"
        for path in sorted(SRC.rglob("*.py"))
        for text in [path.read_text(encoding="utf-8")]
        for match in UNSAFE.finditer(text)
    ]
    assert found == []


def test_the_static_check_can_fail():
    assert UNSAFE.search("x = np.load(f, allow_pickle=True)")
    assert UNSAFE.search("    import pickle\n")
    assert UNSAFE.search("state = torch.load(path)")
    assert not UNSAFE.search("state = torch.load(path, weights_only=True)")


def test_an_object_array_npy_is_a_400_and_nothing_is_unpickled():
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    buffer = io.BytesIO()
    np.save(buffer, np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(ClientError, match="pickle") as caught:
        codecs.decode(buffer.getvalue(), codecs.NPY)
    assert caught.value.status_code == 400


def test_offline_environ_is_a_copy_with_the_switches():
    parent = {"PATH": "/bin", "HF_HUB_OFFLINE": "0"}
    child = offline_environ(parent)
    assert parent == {"PATH": "/bin", "HF_HUB_OFFLINE": "0"}  # never edited
    assert child["PATH"] == "/bin"
    assert {name: child[name] for name in OFFLINE_ENV} == OFFLINE_ENV


def test_enforce_offline_makes_the_hub_libraries_offline_in_this_process():
    environ = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    code = (
        "from smneuron.serving.safety import enforce_offline; enforce_offline(); "
        "import huggingface_hub.constants as c, transformers.utils.hub as h; "
        "print(c.HF_HUB_OFFLINE, h.is_offline_mode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "True"]


def test_the_handler_enforces_offline_before_user_code(opt_ml, monkeypatch):
    from servingfixtures import with_handler
    from smneuron.job import Paths
    from smneuron.serving.runtime import WorkerRuntime
    from smneuron.serving.settings import ServingSettings

    for name in OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    with_handler(opt_ml, "hf_style")
    (opt_ml / "model" / "code" / "inference.py").write_text(
        "import os\nSEEN = os.environ.get('HF_HUB_OFFLINE')\n"
        "def predict_fn(data, model):\n    return [SEEN]\n"
    )
    runtime = WorkerRuntime(ServingSettings(paths=Paths(opt_ml)), None)
    runtime.load()
    assert runtime.invoke(b'"x"', None, None).body == b'["1"]'


def test_requirements_txt_is_refused_with_how_to_opt_in_or_bake(tmp_path):
    (tmp_path / "requirements.txt").write_text("requests\n")
    with pytest.raises(ArtifactError) as caught:
        prepare_requirements(tmp_path, install=False)
    message = caught.value.message
    assert "SMNEURON_INSTALL_MODEL_REQUIREMENTS=true" in message
    assert "into the image" in message
    assert prepare_requirements(tmp_path / "absent", install=False) is False


def test_a_model_with_requirements_txt_does_not_load_by_default(opt_ml, tmp_path):
    from smneuron.job import Paths
    from smneuron.serving.runtime import WorkerRuntime, read_failure, ready_workers
    from smneuron.serving.settings import ServingSettings

    code = opt_ml / "model" / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("requests\n")
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    runtime = WorkerRuntime(ServingSettings(paths=Paths(opt_ml)), runtime_dir)
    with pytest.raises(ArtifactError):
        runtime.load()
    # What /ping is built from: no worker ready, and the failure record saying how to opt in.
    assert ready_workers(runtime_dir, 1) == 0
    assert "SMNEURON_INSTALL_MODEL_REQUIREMENTS" in (read_failure(runtime_dir) or "")
    ok, reason = runtime.health()
    assert not ok and "SMNEURON_INSTALL_MODEL_REQUIREMENTS" in reason
    answer = runtime.invoke(b'{"inputs": "x"}', "application/json", None)
    assert answer.status == 503
    assert "SMNEURON_INSTALL_MODEL_REQUIREMENTS" in answer.body.decode()


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel, built by hand (no network, no build backend)."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        wheel.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_opted_in_requirements_are_installed_once(tmp_path, monkeypatch):
    name = f"smneuron_req_probe_{os.getpid()}_{tmp_path.name.replace('-', '_')}"
    wheel = _wheel(tmp_path, name)
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text(f"{wheel}\n")
    target = tmp_path / "site"
    # Installed into a folder of the test's own, never into the environment running the tests.
    monkeypatch.setenv("PIP_TARGET", str(target))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    assert prepare_requirements(code, install=True) is True
    assert (target / name / "__init__.py").read_text() == "VALUE = 42\n"
    assert prepare_requirements(code, install=True) is False  # the second worker skips it
