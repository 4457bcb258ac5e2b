"""SageMaker SDK local mode end to end with the CPU images, for pictures and sounds: train a tiny
image classifier and a tiny audio classifier, deploy each, invoke with a raw file body."""

from __future__ import annotations

import json

import pytest
from localjobs import SERVE_ENV, SMALL_ENV
from mediamodels import (
    image_bytes,
    picture,
    save_tiny_audio_classifier,
    save_tiny_image_classifier,
    tone,
    wav_bytes,
)
from netutil import free_port

from smneuron.tools.local import sdk as localmode

pytestmark = [pytest.mark.docker, pytest.mark.localmode, pytest.mark.slow]

TINY = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "batch_size": 2}


def write(root, files):
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def train_deploy_invoke(offline, cpu_images, tmp_path, channels, hyperparameters, body, kind):
    work = tmp_path / "job"  # not inside a channel folder
    model_data = localmode.train(
        cpu_images["training"],
        channels,
        work / "output",
        hyperparameters=hyperparameters,
        environment=SMALL_ENV,
        sagemaker_session=localmode.session(container_root=work / "containers"),
    )
    port = free_port("")
    local = localmode.session(port, tmp_path / "containers")
    predictor = localmode.deploy(
        cpu_images["inference"],
        model_data,
        port=port,
        environment=SERVE_ENV,
        sagemaker_session=local,
    )
    try:
        return json.loads(localmode.invoke_local(local, predictor.endpoint_name, body, kind))
    finally:
        localmode.delete(predictor)


def test_image_classification_trains_deploys_and_answers_a_jpeg(offline, cpu_images, tmp_path):
    files = {
        f"{label}/{i}.png": image_bytes(picture(seed + i))
        for seed, label in ((0, "red"), (9, "blue"))
        for i in range(4)
    }
    channels = {
        "train": write(tmp_path / "train", files),
        "validation": write(tmp_path / "validation", files),
        "model": save_tiny_image_classifier(tmp_path / "vit"),
    }
    answer = train_deploy_invoke(
        offline,
        cpu_images,
        tmp_path,
        channels,
        {**TINY, "task": "image-classification"},
        image_bytes(picture(3), "JPEG"),
        "image/jpeg",
    )
    assert answer[0]["label"] in ("blue", "red") and 0.0 < answer[0]["score"] <= 1.0


def test_audio_classification_trains_deploys_and_answers_a_wav(offline, cpu_images, tmp_path):
    files = {
        f"{word}/{i}.wav": wav_bytes(tone(0.3 + 0.1 * i, hz=hz))
        for word, hz in (("yes", 300), ("no", 900))
        for i in range(3)
    }
    channels = {
        "train": write(tmp_path / "train", files),
        "validation": write(tmp_path / "validation", files),
        "model": save_tiny_audio_classifier(tmp_path / "w2v"),
    }
    answer = train_deploy_invoke(
        offline,
        cpu_images,
        tmp_path,
        channels,
        {**TINY, "task": "audio-classification", "audio_durations": "0.5,1"},
        wav_bytes(tone(0.8, 44100, channels=2), 44100),
        "audio/wav",
    )
    assert answer[0]["label"] in ("no", "yes") and 0.0 < answer[0]["score"] <= 1.0
