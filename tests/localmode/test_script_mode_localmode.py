"""Script mode through the SageMaker SDK's own arguments, in local mode with our training image."""

from __future__ import annotations

import ast
import json
import re
import tarfile
from pathlib import Path

import pytest
from localjobs import SMALL_ENV

from smneuron.tools.local import sdk as localmode

pytestmark = [pytest.mark.docker, pytest.mark.localmode, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "script-mode"


def members(uri: str) -> dict[str, bytes]:
    assert uri.startswith("file://"), uri
    with tarfile.open(uri.removeprefix("file://")) as tar:
        return {
            m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_the_example_script_trains_through_estimator_entry_point(
    offline, cpu_images, spam_channels, tmp_path, capfd
):
    from sagemaker.estimator import Estimator

    estimator = Estimator(
        image_uri=cpu_images["training"],
        entry_point="train.py",
        source_dir=str(EXAMPLE),
        hyperparameters={"epochs": 1, "max_steps": 3, "per_device_train_batch_size": 8},
        role=localmode.DUMMY_ROLE,
        instance_count=1,
        instance_type="local",
        output_path=localmode.file_uri(tmp_path / "output"),
        environment=SMALL_ENV,
        sagemaker_session=localmode.session(container_root=tmp_path / "containers"),
    )
    estimator.fit({name: localmode.file_uri(path) for name, path in spam_channels.items()})
    logs = capfd.readouterr().out

    # The hyperparameters arrived as arguments, the folders as SM_* variables.
    line = re.search(r"args: (\{.*\})", logs)
    assert line, logs[-3000:]
    args = ast.literal_eval(line.group(1))
    assert (args["epochs"], args["max_steps"], args["per_device_train_batch_size"]) == (1, 3, 8)
    assert args["model_dir"] == "/opt/ml/model"
    assert args["output_data_dir"] == "/opt/ml/output/data"
    assert args["training_dir"] == "/opt/ml/input/data/train"
    assert args["validation_dir"] == "/opt/ml/input/data/validation"
    assert args["model_name_or_path"] == "/opt/ml/input/data/model"  # SM_CHANNEL_MODEL
    assert args["current_host"] in args["hosts"] and len(args["hosts"]) == 1
    assert args["num_cpus"] >= 1 and args["num_neurons"] == 0
    assert "script mode: running" in logs and "train.py --epochs 1 --max_steps 3" in logs

    # SM_MODEL_DIR became model.tar.gz; SM_OUTPUT_DATA_DIR output.tar.gz.
    model = members(estimator.model_data)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(model)
    assert json.loads(model["config.json"])["id2label"] == {"0": "ham", "1": "spam"}
    output_tar = Path(estimator.model_data.removeprefix("file://")).with_name("output.tar.gz")
    output = members(localmode.file_uri(output_tar))
    assert "eval_accuracy" in json.loads(output["data/metrics.json"])
    assert "success" in output
