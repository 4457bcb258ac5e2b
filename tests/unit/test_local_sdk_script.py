"""`smneuron local train --entry-point/--source-dir`: the SDK's script-mode hyperparameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smneuron.tools import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "script-mode"


def test_entry_point_and_source_dir_reach_the_estimator(monkeypatch, tmp_path, capsys):
    pytest.importorskip("sagemaker")
    from sagemaker.estimator import Estimator

    sent = {}

    def prepare_only(self, inputs=None, wait=True, logs=True, job_name=None, **kwargs):
        self._prepare_for_training(job_name="script-job")  # what fit() does before docker
        sent.update(self.hyperparameters())
        raise RuntimeError("no container in unit tests")

    monkeypatch.setattr(Estimator, "fit", prepare_only)
    code = cli.main(
            [
                "local", "train",
                "--workdir", str(tmp_path / "work"),
                "--output", str(tmp_path / "out"),
                "--channel", f"train={tmp_path}",
                "--entry-point", "train.py",
                "--source-dir", str(EXAMPLE),
                "--hyperparameters", json.dumps({"epochs": 1, "learning_rate": 5e-5}),
            ]
        )  # fmt: skip
    assert code == 2 and "no container in unit tests" in capsys.readouterr().err
    assert json.loads(sent["sagemaker_program"]) == "train.py"
    assert json.loads(sent["sagemaker_submit_directory"]) == f"file://{EXAMPLE}"
    assert json.loads(sent["sagemaker_job_name"]) == "script-job"
    # Each value JSON-encoded by the SDK: the script's SM_HPS keeps numbers numbers.
    assert (json.loads(sent["epochs"]), json.loads(sent["learning_rate"])) == (1, 5e-05)
