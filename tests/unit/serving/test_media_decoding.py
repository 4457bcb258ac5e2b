"""Image and audio bodies: what decodes, and every bad body a 400 or 413 with its reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mediamodels import image_bytes, picture, tone, wav_bytes

from smneuron.errors import ClientError, PayloadTooLarge
from smneuron.serving import images
from smneuron.serving.audio import decode_audio, resample
from smneuron.serving.images import decode_image

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("P", "GIF"),
        ("RGBA", "WEBP"),
        ("CMYK", "JPEG"),
        ("LA", "PNG"),
        ("1", "BMP"),
        ("I;16", "PNG"),
    ],
)
def test_every_usual_mode_becomes_rgb(mode, fmt):
    image = decode_image(image_bytes(picture(1, (20, 10), mode), fmt))
    assert (image.mode, image.size) == ("RGB", (20, 10))


def test_transparent_pixels_are_composited_onto_white():
    from PIL import Image

    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(image_bytes(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = picture(2, (30, 12))
    exif = image.getexif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to display
    assert decode_image(image_bytes(image, "JPEG", exif=exif)).size == (12, 30)


def test_a_truncated_image_is_a_400():
    body = image_bytes(picture(3, (64, 64)), "PNG")
    with pytest.raises(ClientError, match="truncated or corrupt") as caught:
        decode_image(body[: len(body) // 2])
    assert caught.value.status_code == 400


def test_a_corrupt_or_unknown_image_is_a_400():
    for body in (b"GIF89a" + b"\x00" * 20, b"\xff\xd8\xff" + b"junk" * 10, b"hello"):
        with pytest.raises(ClientError) as caught:
            decode_image(body)
        assert caught.value.status_code == 400


def test_a_decompression_bomb_is_a_413_before_decoding():
    from PIL import Image

    # 10000 x 10000 of one colour: a small PNG that would decode to 300 MB.
    bomb = image_bytes(Image.new("L", (10000, 10000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(PayloadTooLarge, match="SMNEURON_MAX_IMAGE_PIXELS") as caught:
        decode_image(bomb, max_pixels=1_000_000)
    assert caught.value.status_code == 413


def test_a_thin_strip_is_a_400_before_a_processor_scales_it_up():
    from PIL import Image

    with pytest.raises(ClientError, match="more than 100 times longer than wide"):
        decode_image(image_bytes(Image.new("RGB", (5000, 2)), "PNG"))
    assert decode_image(image_bytes(Image.new("RGB", (200, 2)), "PNG")).size == (200, 2)


def test_an_unsupported_mode_is_a_400(monkeypatch):
    from PIL import Image

    floats = Image.fromarray(np.ones((4, 4), dtype=np.float32), "F")
    with pytest.raises(ClientError, match="not a readable image"):
        decode_image(image_bytes(floats, "TIFF"))  # TIFF (float pixels) is not read at all
    # Every mode our formats decode to is converted; a narrower list refuses the others.
    monkeypatch.setattr(images, "CONVERTIBLE_MODES", ("RGB",))
    with pytest.raises(ClientError, match="image mode 'L' is not supported") as caught:
        decode_image(image_bytes(picture(1, mode="L"), "PNG"))
    assert caught.value.status_code == 400


@PROPERTY
@given(
    body=st.binary(max_size=400),
    prefix=st.sampled_from(
        [
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff\xe0",
            b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"GIF89a",
            b"BM",
        ]
    ),
)
def test_random_bytes_are_an_image_or_a_400(body, prefix):
    try:
        image = decode_image(prefix + body)
    except ClientError as err:
        assert err.status_code in (400, 413) and err.message
    else:
        assert image.mode == "RGB"


# --------------------------------------------------------------------------------------------
# Audio


def test_stereo_is_mixed_down_and_resampled():
    clip = tone(0.5, 44100, hz=200, channels=2)
    clip[:, 1] = 0.0
    samples = decode_audio(wav_bytes(clip, 44100), 16000, 16000)
    assert samples.shape == (8000,) and samples.dtype == np.float32
    reference = resample(clip.mean(axis=1), 44100, 16000)
    assert np.allclose(samples, reference, atol=1e-3)
    assert abs(np.abs(samples).max() - 0.5 * 0.55) < 0.1  # half the amplitude: one silent channel


def test_resampling_keeps_a_tone():
    t = np.arange(48000) / 48000
    out = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), 48000, 16000)
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert out.shape == (16000,)
    assert np.max(np.abs(out[100:-100] - expected[100:-100])) < 1e-3


@pytest.mark.parametrize(
    "fmt, subtype",
    [
        ("WAV", "PCM_16"),
        ("WAV", "PCM_24"),
        ("WAV", "FLOAT"),
        ("FLAC", None),
        ("OGG", None),
        ("MP3", None),
    ],
)
def test_wav_flac_ogg_mp3_decode(fmt, subtype):
    samples = decode_audio(wav_bytes(tone(0.5), fmt=fmt, subtype=subtype), 16000, 64000)
    assert 7000 <= len(samples) <= 9000  # MP3 adds encoder delay


def test_long_audio_is_cut_or_refused_by_the_overflow_setting():
    body = wav_bytes(tone(3.0))
    assert len(decode_audio(body, 16000, 16000, overflow="truncate")) == 16000
    with pytest.raises(PayloadTooLarge, match="longer than the largest compiled bucket") as caught:
        decode_audio(body, 16000, 16000, overflow="reject")
    assert caught.value.status_code == 413


def test_zero_length_and_undecodable_audio_are_400s():
    empty = wav_bytes(np.zeros((0, 1), dtype=np.float32))
    with pytest.raises(ClientError, match="zero length"):
        decode_audio(empty, 16000, 16000)
    for body in (b"RIFF\x00\x00\x00\x00WAVE", b"not audio at all", wav_bytes(tone(0.5))[:30]):
        with pytest.raises(ClientError) as caught:
            decode_audio(body, 16000, 16000)
        assert caught.value.status_code == 400


def test_a_truncated_wav_decodes_what_it_holds():
    body = wav_bytes(tone(1.0))
    samples = decode_audio(body[: len(body) // 2], 16000, 64000)
    assert 0 < len(samples) <= 8000


@PROPERTY
@given(
    body=st.binary(max_size=400),
    prefix=st.sampled_from([b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"ID3"]),
)
def test_random_bytes_are_audio_or_a_400(body, prefix):
    try:
        samples = decode_audio(prefix + body, 16000, 16000)
    except ClientError as err:
        assert err.status_code in (400, 413) and err.message
    else:
        assert samples.dtype == np.float32 and 0 < len(samples) <= 16000
        assert np.all(np.isfinite(samples))


def test_nothing_prints_to_stdout_while_decoding(capfd):
    decode_audio(wav_bytes(tone(0.1)), 16000, 16000)
    decode_image(io.BytesIO(image_bytes(picture(1))).getvalue())
    assert capfd.readouterr().out == ""
