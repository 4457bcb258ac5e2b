"""Host integration: image and audio artifacts behind `serve` (nginx + gunicorn), and every bad
body a JSON 400/413/415 with its reason while the worker keeps answering."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
from hostserver import Server, require_nginx
from mediamodels import (
    image_bytes,
    picture,
    save_tiny_audio_classifier,
    save_tiny_image_classifier,
    tone,
    wav_bytes,
)

pytestmark = pytest.mark.slow


def serve(tmp_path_factory, name, save, stack="gunicorn", durations="0.5,1", **env):
    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.job import CompileHyperparameters, compile_checkpoint
    from smneuron.typed import parse_hyperparameters

    require_nginx()
    base = tmp_path_factory.mktemp(f"serve-{name}")
    save(base / "checkpoint")
    settings = parse_hyperparameters(
        CompileHyperparameters,
        {"batch_size": 2, "batch_sizes": "1,2", "audio_durations": durations},
    )
    compile_checkpoint(base / "checkpoint", base / "model", settings, backend=CpuBackend())
    return Server(stack, base, base / "server.log", env)


@pytest.fixture(scope="module", params=["gunicorn", "mms"])
def image_server(request, tmp_path_factory):
    running = serve(
        tmp_path_factory,
        f"image-{request.param}",
        save_tiny_image_classifier,
        request.param,
        SMNEURON_MAX_IMAGE_PIXELS="1000000",
    )
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


@pytest.fixture(scope="module")
def audio_server(tmp_path_factory):
    running = serve(
        tmp_path_factory, "audio", save_tiny_audio_classifier, SMNEURON_OVERFLOW="reject"
    )
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


def post(server, body, content_type, **kwargs):
    return requests.post(
        server.url + "/invocations",
        data=body,
        headers={"Content-Type": content_type},
        timeout=60,
        **kwargs,
    )


def assert_error(reply, status, words):
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    assert words in reply.json()["error"]
    assert "Traceback" not in reply.text


def test_images_are_answered_as_raw_bodies_and_base64_json(image_server):
    png = image_bytes(picture(1), "PNG")
    raw = post(image_server, png, "image/png")
    assert raw.status_code == 200, raw.text
    [answer] = raw.json()
    assert set(answer) == {"label", "score"}
    as_json = post(
        image_server,
        None,
        "application/json",
        json={"inputs": base64.b64encode(png).decode(), "parameters": {"top_k": 3}},
    )
    ranked = as_json.json()
    assert [r["label"] for r in ranked][0] == answer["label"]
    assert ranked[0]["score"] == pytest.approx(answer["score"], abs=1e-6)
    jpeg = image_bytes(picture(2), "JPEG")
    csv = requests.post(
        image_server.url + "/invocations",
        data=jpeg,
        headers={"Content-Type": "image/jpeg", "Accept": "text/csv"},
        timeout=60,
    )
    label, score = csv.text.strip().split(",")
    assert label in ("cat", "dog", "fox") and 0.0 < float(score) <= 1.0
    listed = post(
        image_server,
        None,
        "application/json",
        json={"inputs": [base64.b64encode(b).decode() for b in (png, jpeg)]},
    )
    assert len(listed.json()) == 2


def test_bad_images_are_400_or_413_and_the_worker_lives_on(image_server):
    from PIL import Image

    png = image_bytes(picture(3, (64, 64)), "PNG")
    bomb = image_bytes(Image.new("L", (5000, 5000)), "PNG")
    cases = [
        (png[: len(png) // 2], "image/png", 400, "truncated or corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png", 400, "image"),
        (b"definitely not a picture", "image/jpeg", 400, "not a readable image"),
        (bomb, "image/png", 413, "SMNEURON_MAX_IMAGE_PIXELS"),
        (b"", "image/webp", 400, "empty"),
        (wav_bytes(tone(0.2)), "audio/wav", 415, "this model takes image bodies"),
        (b'{"inputs": "@@not base64@@"}', "application/json", 400, "not base64"),
        (b'{"inputs": {"question": "q?", "context": "c"}}', "application/json", 400, "takes image"),
    ]
    for body, content_type, status, words in cases:
        assert_error(post(image_server, body, content_type), status, words)
    assert post(image_server, png, "image/png").status_code == 200


def test_audio_is_answered_and_bad_audio_is_400_or_413(audio_server):
    ok = post(audio_server, wav_bytes(tone(0.7, 44100, channels=2), 44100), "audio/x-wav")
    assert ok.status_code == 200, ok.text
    assert ok.json()[0]["label"] in ("cat", "dog", "fox")
    flac = post(audio_server, wav_bytes(tone(0.3), fmt="FLAC"), "audio/flac")
    assert flac.status_code == 200, flac.text
    mp3 = post(audio_server, wav_bytes(tone(0.3), fmt="MP3"), "audio/mpeg")
    assert mp3.status_code == 200, mp3.text
    cases = [
        (b"RIFF\x00\x00\x00\x00WAVE", "audio/wav", 400, "not decodable audio"),
        (wav_bytes(np.zeros((0, 1), dtype=np.float32)), "audio/wav", 400, "zero length"),
        (wav_bytes(tone(2.5)), "audio/wav", 413, "longer than the largest compiled bucket"),
        (image_bytes(picture(1)), "image/png", 415, "this model takes audio bodies"),
    ]
    for body, content_type, status, words in cases:
        assert_error(post(audio_server, body, content_type), status, words)
    assert post(audio_server, wav_bytes(tone(0.4)), "audio/wav").status_code == 200
