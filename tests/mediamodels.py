"""Tiny random-weight image and audio classifiers (built from configs) and generated media."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

MEDIA_LABELS = ("cat", "dog", "fox")
IMAGE_SIZE = 32
SAMPLING_RATE = 16000


def save_tiny_image_classifier(
    target: Path, kind: str = "vit", labels: tuple[str, ...] = MEDIA_LABELS
) -> Path:
    """A ViT / ConvNeXt / ResNet-style classifier with its image processor (32x32 inputs)."""
    import torch
    import transformers

    torch.manual_seed(0)
    names = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    if kind == "vit":
        config = transformers.ViTConfig(
            image_size=IMAGE_SIZE,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            **names,
        )
        model = transformers.ViTForImageClassification(config)
        processor = transformers.ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    elif kind == "convnext":
        config = transformers.ConvNextConfig(
            hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **names
        )
        model = transformers.ConvNextForImageClassification(config)
        processor = transformers.ConvNextImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_pct=0.875
        )
    elif kind == "resnet":
        config = transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", **names
        )
        model = transformers.ResNetForImageClassification(config)
        processor = transformers.ConvNextImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_pct=0.875
        )
    else:
        raise ValueError(kind)
    target.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(target)
    processor.save_pretrained(target)
    return target


def save_tiny_masked_image_model(target: Path) -> Path:
    """A ViT with a masked-image-modeling head (SimMIM-style) and its image processor."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        encoder_stride=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
    )
    target.mkdir(parents=True, exist_ok=True)
    transformers.ViTForMaskedImageModeling(config).eval().save_pretrained(target)
    transformers.ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(target)
    return target


def save_tiny_audio_classifier(
    target: Path, kind: str = "wav2vec2", labels: tuple[str, ...] = MEDIA_LABELS
) -> Path:
    """A wav2vec2-, HuBERT- or AST-style classifier with its feature extractor (16 kHz)."""
    import torch
    import transformers

    torch.manual_seed(0)
    common = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        classifier_proj_size=16,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    if kind == "ast":  # a spectrogram transformer: its extractor gives fixed-size fbanks
        config = transformers.ASTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            max_length=100, num_mel_bins=16, frequency_stride=10, time_stride=10,
            id2label=common["id2label"], label2id=common["label2id"],
        )  # fmt: skip
        target.mkdir(parents=True, exist_ok=True)
        transformers.ASTForAudioClassification(config).eval().save_pretrained(target)
        transformers.ASTFeatureExtractor(num_mel_bins=16, max_length=100).save_pretrained(target)
        return target
    if kind == "wav2vec2":
        model = transformers.Wav2Vec2ForSequenceClassification(
            transformers.Wav2Vec2Config(**common)
        )
    elif kind == "hubert":
        model = transformers.HubertForSequenceClassification(transformers.HubertConfig(**common))
    else:
        raise ValueError(kind)
    extractor = transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=SAMPLING_RATE, return_attention_mask=True, do_normalize=True
    )
    target.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(target)
    extractor.save_pretrained(target)
    return target


# --------------------------------------------------------------------------------------------
# Generated media


def picture(seed: int = 0, size: tuple[int, int] = (48, 40), mode: str = "RGB"):
    """A PIL image of random blocks (different seeds give different answers)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((size[1] // 4 + 1, size[0] // 4 + 1, 1), dtype=np.uint8))
    image = Image.fromarray(pixels[: size[1], : size[0]], "RGB")
    return image if mode == "RGB" else image.convert(mode)


def image_bytes(image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def tone(seconds: float, rate: int = SAMPLING_RATE, hz: float = 440.0, channels: int = 1):
    """A sine tone with a little noise, ``[samples, channels]`` float32."""
    rng = np.random.default_rng(int(hz))
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(len(t))
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = SAMPLING_RATE, fmt: str = "WAV", subtype=None):
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()
