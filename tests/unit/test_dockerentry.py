"""The images' entrypoint: which program a container runs for its arguments."""

from __future__ import annotations

from smneuron.dockerentry import choose_command


def test_sagemaker_arguments_run_as_given():
    assert choose_command(["train"], {}) == ["train"]
    assert choose_command(["serve"], {"SMNEURON_IMAGE_ROLE": "training"}) == ["serve"]
    assert choose_command(["bash", "-c", "true"], {}) == ["bash", "-c", "true"]


def test_no_argument_follows_the_image_role():
    assert choose_command([], {"SMNEURON_IMAGE_ROLE": "training"}) == ["train"]
    assert choose_command([], {"SMNEURON_IMAGE_ROLE": "inference"}) == ["serve"]


def test_no_role_trains_only_where_a_training_job_is_configured(tmp_path):
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path)}
    assert choose_command([], env) == ["serve"]
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text("{}")
    assert choose_command([], env) == ["train"]
