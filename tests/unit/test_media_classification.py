"""Image and audio classification: data layouts, a tiny training run each, and served answers
equal to the in-process Hugging Face model + processor on the same checkpoint."""

from __future__ import annotations

import base64
import json
import logging

import numpy as np
import pytest
from mediamodels import (
    image_bytes,
    picture,
    save_tiny_audio_classifier,
    save_tiny_image_classifier,
    save_tiny_masked_image_model,
    tone,
    wav_bytes,
)

from smneuron.errors import ClientError, DataError, UnsupportedContentType
from smneuron.training.media import find_examples, label_ids, label_names


def channels_of(opt_ml):
    return {p.name: p for p in opt_ml.paths.data.iterdir()}


def channel(opt_ml, name, files):
    """A channel holding ``files`` (relative paths with folders -> str or bytes)."""
    directory = opt_ml.channel(name)
    for relative, content in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return directory


# --------------------------------------------------------------------------------------------
# Data layouts


def test_a_folder_per_label_gives_the_folder_names_as_labels(opt_ml):
    png = image_bytes(picture(1))
    channel(opt_ml, "train", {"cat/a.png": png, "cat/b.jpg": png, "dog/c.png": png})
    examples = find_examples("train", channels_of(opt_ml), "image-classification", "", "label")
    assert sorted((e.path.name, e.label) for e in examples) == [
        ("a.png", "cat"),
        ("b.jpg", "cat"),
        ("c.png", "dog"),
    ]
    assert label_names(examples, ()) == ("cat", "dog")


@pytest.mark.parametrize(
    "manifest, text",
    [
        ("labels.csv", "file_name,label\nimg/a.png,cat\nimg/b.png,dog\n"),
        (
            "labels.jsonl",
            '{"path": "img/a.png", "label": "cat"}\n{"path": "img/b.png", "label": "dog"}\n',
        ),
    ],
)
def test_a_csv_or_jsonl_manifest_names_files_relative_to_itself(opt_ml, manifest, text):
    png = image_bytes(picture(1))
    channel(opt_ml, "train", {manifest: text, "img/a.png": png, "img/b.png": png})
    examples = find_examples("train", channels_of(opt_ml), "image-classification", "", "label")
    assert [(e.path.name, e.label) for e in examples] == [("a.png", "cat"), ("b.png", "dog")]


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.png": b"x"}, "not in a label folder"),
        ({"notes.txt": "hi"}, "folder per label"),
        ({"m.csv": "file_name,label\nmissing.png,cat\n"}, "'missing.png' not found"),
        ({"m.csv": "picture,label\na.png,cat\n"}, "no column 'file_name / file / path"),
        ({"m.csv": "file_name,kind\na.png,cat\n", "a.png": b"x"}, "no column 'label'"),
    ],
)
def test_bad_layouts_are_data_errors_that_say_what_to_fix(opt_ml, files, message):
    channel(opt_ml, "train", files)
    with pytest.raises(DataError, match=message):
        find_examples("train", channels_of(opt_ml), "image-classification", "", "label")


def test_a_json_file_inside_a_label_folder_is_no_manifest(opt_ml):
    png = image_bytes(picture(1))
    channel(opt_ml, "train", {"cat/a.png": png, "cat/notes.json": "{}", "dog/b.png": png})
    examples = find_examples("train", channels_of(opt_ml), "image-classification", "", "label")
    assert sorted(e.label for e in examples) == ["cat", "dog"]


def test_a_label_outside_the_given_labels_is_named(opt_ml):
    channel(opt_ml, "train", {"cat/a.wav": wav_bytes(tone(0.1)), "owl/b.wav": wav_bytes(tone(0.1))})
    examples = find_examples("train", channels_of(opt_ml), "audio-classification", "", "label")
    with pytest.raises(DataError, match="b.wav has label 'owl', not one of the labels"):
        label_ids("train", examples, ("cat", "dog"))


# --------------------------------------------------------------------------------------------
# Tiny training runs, served


def train(opt_ml, tmp_path, caplog, task, files, **hps):
    from smneuron.job import TrainingEnv
    from smneuron.training import hyperparameters, trainer
    from smneuron.training.checkpoints import TerminationFlag

    channel(opt_ml, "train", files)
    channel(opt_ml, "validation", files)
    opt_ml.hyperparameters(
        {
            "task": task,
            "epochs": 2,
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "learning_rate": 0.01,
            "batch_size": 2,
            "batch_sizes": "1,2",
            **hps,
        }
    )
    env = TrainingEnv.from_env()
    caplog.set_level(logging.INFO, logger="smneuron.training.trainer")
    return trainer.train(env, hyperparameters.load(env.hyperparameters), TerminationFlag(), "cpu")


def handler_for(opt_ml, **environ):
    from smneuron.artifact.backends import CpuBackend
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings

    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(opt_ml.base), **environ})
    handler = Handler.load(opt_ml.paths.model, WorkerInfo(0, None, settings, CpuBackend()))
    handler.warm_up()
    return handler


def softmax(logits):
    exps = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


def test_image_classification_trains_logs_accuracy_and_serves_the_models_answers(
    opt_ml, tmp_path, caplog
):
    import torch
    import transformers

    from smneuron.artifact.manifest import read_manifest

    save_tiny_image_classifier(tmp_path / "vit", "vit")
    opt_ml.model_channel(tmp_path / "vit")
    files = {
        f"{label}/{i}.png": image_bytes(picture(seed + i))
        for seed, label in ((0, "red"), (10, "blue"))
        for i in range(4)
    }
    result = train(opt_ml, tmp_path, caplog, "image-classification", files)
    assert result.labels == ("blue", "red")
    assert " eval_accuracy=" in caplog.text and " train_loss=" in caplog.text
    assert 0.0 <= result.metrics["eval_accuracy"] <= 1.0
    manifest = read_manifest(opt_ml.paths.model)
    assert (manifest.task, manifest.image_size, manifest.batch_sizes) == (
        "image-classification",
        (32, 32),
        (1, 2),
    )
    assert (opt_ml.paths.model / "preprocessor_config.json").is_file()

    model_dir = str(opt_ml.paths.model)
    model = transformers.AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    # An EXIF-rotated JPEG, a palette PNG, an RGBA WebP, a grayscale image.
    upright = picture(3, (40, 24))
    rotated = upright.rotate(90, expand=True)  # stored sideways, EXIF says "rotate back"
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    bodies = [
        ("image/jpeg", image_bytes(rotated, "JPEG", quality=95, exif=exif)),
        ("image/png", image_bytes(picture(4).convert("P"), "PNG")),
        ("image/webp", image_bytes(picture(5).convert("RGBA"), "WEBP", lossless=True)),
        ("application/x-image", image_bytes(picture(6).convert("L"), "PNG")),
    ]
    from smneuron.serving.images import decode_image

    handler = handler_for(opt_ml)
    try:
        for content_type, body in bodies:
            image = decode_image(body)
            with torch.no_grad():
                logits = model(**processor(images=[image], return_tensors="pt")).logits.numpy()
            expected = softmax(logits)[0]
            reply = handler.invoke(body, content_type, "application/json")
            answer = json.loads(reply.body)
            assert answer[0]["label"] == model.config.id2label[int(expected.argmax())]
            assert answer[0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)
            ranked = json.loads(
                handler.invoke(
                    json.dumps(
                        {"inputs": base64.b64encode(body).decode(), "parameters": {"top_k": None}}
                    ).encode(),
                    "application/json",
                    None,
                ).body
            )
            assert [r["score"] for r in ranked] == pytest.approx(
                sorted(expected, reverse=True), abs=1e-5
            )
        # EXIF orientation was applied: the served image is the upright one.
        assert decode_image(bodies[0][1]).size == upright.size
        many = [base64.b64encode(body).decode() for _, body in bodies]
        answers = json.loads(
            handler.invoke(json.dumps({"inputs": many}).encode(), "application/json", None).body
        )
        assert len(answers) == 4 and all(set(a) == {"label", "score"} for a in answers)
        with pytest.raises(UnsupportedContentType):
            handler.invoke(bodies[0][1], "audio/wav", None)
        with pytest.raises(ClientError, match="not base64"):
            handler.invoke(b'{"inputs": "not an image!"}', "application/json", None)
    finally:
        handler.model.close()


def test_image_classification_trains_from_a_manifest_with_a_convnext(opt_ml, tmp_path, caplog):
    save_tiny_image_classifier(tmp_path / "convnext", "convnext")
    opt_ml.model_channel(tmp_path / "convnext")
    files = {f"images/{i}.png": image_bytes(picture(i)) for i in range(4)}
    files["train.jsonl"] = "".join(
        json.dumps({"file_name": f"images/{i}.png", "label": ["a", "b"][i % 2]}) + "\n"
        for i in range(4)
    )
    result = train(opt_ml, tmp_path, caplog, "image-classification", files, epochs=1)
    assert result.labels == ("a", "b")
    handler = handler_for(opt_ml)
    try:
        answer = json.loads(handler.invoke(files["images/0.png"], "image/png", None).body)
        assert answer[0]["label"] in ("a", "b")
    finally:
        handler.model.close()


def test_audio_classification_trains_on_buckets_and_serves_the_models_answers(
    opt_ml, tmp_path, caplog
):
    import torch
    import transformers

    from smneuron.artifact.manifest import read_manifest

    save_tiny_audio_classifier(tmp_path / "w2v", "wav2vec2")
    opt_ml.model_channel(tmp_path / "w2v")
    files = {
        f"{word}/{i}.wav": wav_bytes(tone(0.3 + 0.1 * i, hz=hz))
        for word, hz in (("yes", 300), ("no", 900))
        for i in range(3)
    }
    result = train(opt_ml, tmp_path, caplog, "audio-classification", files, audio_durations="0.5,1")
    assert result.labels == ("no", "yes")
    assert " eval_accuracy=" in caplog.text
    manifest = read_manifest(opt_ml.paths.model)
    assert (manifest.sequence_lengths, manifest.sampling_rate) == ((8000, 16000), 16000)
    assert manifest.input_names == ("input_values", "attention_mask")

    model_dir = str(opt_ml.paths.model)
    model = transformers.AutoModelForAudioClassification.from_pretrained(model_dir).eval()
    extractor = transformers.AutoFeatureExtractor.from_pretrained(model_dir)

    def expected(clip, bucket):
        features = extractor(
            [clip],
            sampling_rate=16000,
            padding="max_length",
            max_length=bucket,
            return_attention_mask=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            return softmax(model(**features).logits.numpy())[0]

    handler = handler_for(opt_ml)
    try:
        for seconds, bucket in ((0.3, 8000), (0.9, 16000)):
            clip = tone(seconds, hz=500)[:, 0]
            for content_type, body in (
                ("audio/wav", wav_bytes(clip, subtype="FLOAT")),
                ("audio/x-wav", wav_bytes(clip, subtype="FLOAT")),
            ):
                answer = json.loads(handler.invoke(body, content_type, None).body)[0]
                scores = expected(clip, bucket)
                assert answer["label"] == model.config.id2label[int(scores.argmax())]
                assert answer["score"] == pytest.approx(float(scores.max()), abs=1e-5)
        # Stereo FLAC at 44.1 kHz and MP3: mixed down, resampled, answered.
        stereo = wav_bytes(tone(0.5, 44100, channels=2), 44100, "FLAC")
        reply = json.loads(handler.invoke(stereo, "audio/flac", None).body)
        assert reply[0]["label"] in ("no", "yes")
        mp3 = wav_bytes(tone(0.5, 22050), 22050, "MP3")
        assert json.loads(handler.invoke(mp3, "audio/mpeg", None).body)[0]["label"] in ("no", "yes")
        body = {
            "inputs": [base64.b64encode(wav_bytes(tone(s))).decode() for s in (0.2, 0.7, 3.0)],
            "parameters": {"top_k": 2},
        }
        ranked = json.loads(
            handler.invoke(json.dumps(body).encode(), "application/json", None).body
        )
        assert [len(r) for r in ranked] == [2, 2, 2]  # 3 s is cut to the 1 s bucket (truncate)
    finally:
        handler.model.close()


@pytest.mark.parametrize("kind", ["resnet", "hubert", "ast"])
def test_smneuron_compile_tells_the_task_and_serves_the_models_answers(tmp_path, kind):
    import torch
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.job import CompileHyperparameters, compile_checkpoint
    from smneuron.serving.media import load_media
    from smneuron.serving.settings import ServingSettings

    image = kind == "resnet"
    save = save_tiny_image_classifier if image else save_tiny_audio_classifier
    save(tmp_path / "checkpoint", kind)
    settings = CompileHyperparameters(batch_size=2, audio_durations=(0.5,))
    manifest = compile_checkpoint(
        tmp_path / "checkpoint", tmp_path / "model", settings, backend=CpuBackend()
    )
    assert manifest.task == ("image-classification" if image else "audio-classification")
    assert manifest.labels == ("cat", "dog", "fox")
    serving = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    served = load_media(tmp_path / "model", CpuBackend(), serving)
    auto = "AutoModelForImageClassification" if image else "AutoModelForAudioClassification"
    model = getattr(transformers, auto).from_pretrained(str(tmp_path / "checkpoint")).eval()
    try:
        if image:
            body = image_bytes(picture(7))
            processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "model"))
            features = processor(images=[picture(7)], return_tensors="pt")
        else:
            clip = tone(0.4)[:, 0]
            body = wav_bytes(clip)
            extractor = transformers.AutoFeatureExtractor.from_pretrained(str(tmp_path / "model"))
            features = extractor(
                [clip], sampling_rate=16000, padding="max_length", max_length=8000,
                truncation=True, return_tensors="pt",
            )  # fmt: skip
            features = {k: v for k, v in features.items() if k in manifest.input_names}
        with torch.no_grad():
            expected = softmax(model(**features).logits.numpy())[0]
        ranked = served.predict([], {"top_k": None}, media=[body], single=True).results
        assert [r["score"] for r in ranked] == pytest.approx(
            sorted(expected.tolist(), reverse=True), abs=1e-5
        )
    finally:
        served.close()


def test_masked_image_modeling_trains_and_serves_the_reconstruction(opt_ml, tmp_path, caplog):
    import io

    import torch
    import transformers
    from PIL import Image

    from smneuron.artifact.manifest import read_manifest
    from smneuron.serving.images import decode_image

    save_tiny_masked_image_model(tmp_path / "mim")
    opt_ml.model_channel(tmp_path / "mim")
    files = {f"{i}.png": image_bytes(picture(i)) for i in range(6)}  # no labels: flat folder
    result = train(opt_ml, tmp_path, caplog, "masked-image-modeling", files, mask_ratio=0.5)
    assert result.labels == () and " eval_loss=" in caplog.text
    manifest = read_manifest(opt_ml.paths.model)
    assert manifest.input_names == ("pixel_values", "bool_masked_pos")
    assert manifest.image_size == (32, 32)

    model_dir = str(opt_ml.paths.model)
    model = transformers.AutoModelForMaskedImageModeling.from_pretrained(model_dir).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    body = image_bytes(picture(9), "JPEG")
    masked = [0, 5, 15]
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, masked] = True
    with torch.no_grad():
        pixels = processor(images=[decode_image(body)], return_tensors="pt")["pixel_values"]
        out = model(pixel_values=pixels, bool_masked_pos=mask).reconstruction
    expected = (out * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)[0].numpy()

    handler = handler_for(opt_ml)
    try:
        request = {
            "inputs": base64.b64encode(body).decode(),
            "parameters": {"masked_patches": masked},
        }
        answer = json.loads(
            handler.invoke(json.dumps(request).encode(), "application/json", None).body
        )
        assert answer["masked_patches"] == masked
        assert np.allclose(np.asarray(answer["reconstruction"]), expected, atol=1e-5)
        npy = handler.invoke(json.dumps(request).encode(), "application/json", "application/x-npy")
        assert np.load(io.BytesIO(npy.body)).shape == (32, 32, 3)
        png = handler.invoke(body, "image/jpeg", "image/png")
        assert (png.content_type, Image.open(io.BytesIO(png.body)).size) == ("image/png", (32, 32))
        ratio = {
            "inputs": [base64.b64encode(body).decode()] * 2,
            "parameters": {"mask_ratio": 0.25, "seed": 3},
        }
        both = json.loads(handler.invoke(json.dumps(ratio).encode(), "application/json", None).body)
        assert [len(a["masked_patches"]) for a in both] == [4, 4]
        with pytest.raises(ClientError, match="outside the 4x4 = 16 patches"):
            bad = {"inputs": request["inputs"], "parameters": {"masked_patches": [16]}}
            handler.invoke(json.dumps(bad).encode(), "application/json", None)
    finally:
        handler.model.close()


def test_the_compile_command_takes_audio_durations_in_seconds():
    import argparse

    from smneuron.artifact import job
    from smneuron.artifact.media import duration_buckets

    parser = argparse.ArgumentParser()
    job.add_arguments(parser)
    args = parser.parse_args(["--checkpoint", "x", "--output", "y", "--audio-durations", "1,2.5"])
    assert job._from_args(args).audio_durations == (1.0, 2.5)
    assert duration_buckets((1.0, 2.5, 1.0), 16000) == (16000, 40000)
    with pytest.raises(Exception, match="below the minimum"):
        job._from_args(parser.parse_args(["--audio-durations", "0"]))
