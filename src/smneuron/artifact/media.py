"""Image and audio checkpoints -> serving artifact: the processor fixes the static input shapes.

Images: the checkpoint's image processor resizes every image to one size, so an artifact has
one bucket (``image_size``, height × width) and one graph per batch size, taking
``pixel_values [batch, 3, height, width]``.

Audio: a few duration buckets (``DEFAULT_DURATIONS_S`` seconds at the feature extractor's
sampling rate); the feature extractor pads or cuts each input to its bucket, so a graph per
(batch size, bucket) takes what the extractor returns (``input_values`` and, where the
extractor gives one, ``attention_mask``).

Used by ``train`` (after fine-tuning) and ``smneuron compile`` (``artifact.job``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smneuron.artifact.backends import Backend
from smneuron.artifact.build import trace_graphs
from smneuron.artifact.manifest import (
    AUDIO_TASKS,
    IMAGE_TASKS,
    Manifest,
)
from smneuron.env import remote_code_hint
from smneuron.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

DEFAULT_DURATIONS_S = (1.0, 2.0, 4.0)
# The auto classes of each media task (model head, processor).
MODEL_CLASSES = {
    "image-classification": "AutoModelForImageClassification",
    "audio-classification": "AutoModelForAudioClassification",
    "masked-image-modeling": "AutoModelForMaskedImageModeling",
}
PROCESSOR_CLASSES = {
    "image-classification": "AutoImageProcessor",
    "masked-image-modeling": "AutoImageProcessor",
    "audio-classification": "AutoFeatureExtractor",
}


def load_processor(
    folder: str | Path, task: str, *, trust_remote_code: bool = False, local_only: bool = True
) -> Any:
    """The checkpoint's image processor or feature extractor (``preprocessor_config.json``)."""
    import transformers

    auto = getattr(transformers, PROCESSOR_CLASSES[task])
    try:
        return auto.from_pretrained(
            str(folder), local_files_only=local_only, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        kind = "image processor" if task in IMAGE_TASKS else "feature extractor"
        raise ConfigurationError(
            f"cannot load the {kind} from {folder}: {remote_code_hint(err)} The checkpoint "
            "must hold preprocessor_config.json (save_pretrained of the processor)."
        ) from err


# --------------------------------------------------------------------------------------------
# Images


def image_pixels(processor: Any, images: Sequence[Any]) -> np.ndarray:
    """``pixel_values`` ``[n, channels, height, width]`` (float32) of RGB PIL images."""
    import numpy as np

    out = processor(images=list(images), return_tensors="np")
    return np.asarray(out["pixel_values"], dtype=np.float32)


def image_size_of(processor: Any) -> tuple[int, int]:
    """(height, width) the processor resizes every image to (found by running it once)."""
    from PIL import Image

    probe = Image.new("RGB", (97, 61), (128, 128, 128))
    shape = image_pixels(processor, [probe]).shape
    return int(shape[-2]), int(shape[-1])


def patch_grid(model_or_config: Any, image_size: tuple[int, int]) -> tuple[int, int]:
    """Masked image modeling: (rows, columns) of patches the mask has one flag each for."""
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, Mapping):  # config.json as read by the server
        patch = config.get("patch_size")
    else:
        patch = getattr(config, "patch_size", None)
    if isinstance(patch, list | tuple):
        patch = patch[0]
    if not isinstance(patch, int) or patch < 1:
        raise ConfigurationError("masked-image-modeling needs a ViT-style config with patch_size")
    return image_size[0] // patch, image_size[1] // patch


# --------------------------------------------------------------------------------------------
# Audio


def sampling_rate_of(processor: Any) -> int:
    rate = getattr(processor, "sampling_rate", None)
    if not isinstance(rate, int) or rate < 1:
        raise ConfigurationError(
            "the feature extractor names no sampling_rate; save one with the checkpoint"
        )
    return rate


def duration_buckets(durations_s: Sequence[float], sampling_rate: int) -> tuple[int, ...]:
    """Samples per bucket, ascending: ``duration_buckets((1, 2), 16000) == (16000, 32000)``."""
    samples = sorted({round(float(d) * sampling_rate) for d in durations_s})
    if not samples or samples[0] < 1:
        raise ConfigurationError(f"audio durations must be > 0 s, got {list(durations_s)}")
    return tuple(samples)


def audio_features(
    processor: Any, clips: Sequence[np.ndarray], samples: int, names: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The extractor's arrays for mono float32 ``clips``, each padded or cut to ``samples``.

    ``names``: keep only these outputs (the graph's inputs), in this order.
    """
    import numpy as np

    out = processor(
        [np.asarray(clip, dtype=np.float32) for clip in clips],
        sampling_rate=sampling_rate_of(processor),
        padding="max_length",
        max_length=samples,
        truncation=True,
        return_tensors="np",
    )
    keys = list(names) or [key for key in out if key in AUDIO_INPUTS]
    return {key: np.asarray(out[key]) for key in keys}


AUDIO_INPUTS = ("input_values", "input_features", "attention_mask")


def audio_input_names(processor: Any, model: torch.nn.Module) -> tuple[str, ...]:
    """The extractor's outputs that the model's forward takes, main input first."""
    import numpy as np

    probe = max(1, sampling_rate_of(processor) // 10)  # a spectrogram needs whole windows
    found = audio_features(processor, [np.zeros(probe, dtype=np.float32)], probe)
    accepted = inspect.signature(model.forward).parameters
    names = tuple(key for key in AUDIO_INPUTS if key in found and key in accepted)
    if not names or names[0] == "attention_mask":
        raise ConfigurationError(
            f"the feature extractor gives {sorted(found)}, none of which the model takes"
        )
    return names


# --------------------------------------------------------------------------------------------
# Graphs


def traceable(model: torch.nn.Module, names: Sequence[str]) -> torch.nn.Module:
    """``forward(*tensors)`` in ``names`` order -> logits (a plain tensor)."""
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, keys: tuple[str, ...]) -> None:
            super().__init__()
            self.inner = inner
            self.keys = keys

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            named = dict(zip(self.keys, inputs, strict=True))
            return self.inner(**named, return_dict=False)[0]

    return _Logits(model.eval(), tuple(names)).eval()


def reconstructing(model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]) -> Any:
    """Masked image modeling: ``forward(pixel_values, bool_masked_pos)`` -> the reconstruction
    as an RGB image ``[batch, height, width, 3]`` in 0..1 (the processor's normalisation undone
    inside the graph, so the server only encodes it)."""
    import torch

    class _Reconstruction(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

        def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> Any:
            out = self.inner(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos)
            image = (out.reconstruction * self.std + self.mean).clamp(0.0, 1.0)
            return image.permute(0, 2, 3, 1)

    return _Reconstruction(model.eval()).eval()


def normalisation(processor: Any) -> tuple[list[float], list[float]]:
    """The processor's mean and std per channel (identity where it does not normalise)."""

    def three(value: Any, default: float) -> list[float]:
        if value is None or not getattr(processor, "do_normalize", True):
            return [default] * 3
        return [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)] * 3

    return three(getattr(processor, "image_mean", None), 0.0), three(
        getattr(processor, "image_std", None), 1.0
    )


def as_tensors(arrays: Mapping[str, Any], names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """Graph inputs from numpy arrays: masks as int64 (patch masks bool), signals and pixels
    as float32."""
    import numpy as np
    import torch

    out = []
    for name in names:
        array = np.asarray(arrays[name])
        if name == "bool_masked_pos":
            out.append(torch.from_numpy(np.ascontiguousarray(array, dtype=np.bool_)))
            continue
        dtype = np.int64 if name == "attention_mask" else np.float32
        out.append(torch.from_numpy(np.ascontiguousarray(array, dtype=dtype)))
    return tuple(out)


def compile_media_artifact(
    model_dir: Path,
    model: torch.nn.Module,
    processor: Any,
    *,
    task: str,
    labels: Sequence[str],
    batch_sizes: Sequence[int],
    backend: Backend,
    durations_s: Sequence[float] = DEFAULT_DURATIONS_S,
    cores_per_model: int = 1,
    compiler_args: Sequence[str] = (),
) -> Manifest:
    """Trace one graph per (batch size, bucket) into ``model_dir/compiled``; write the manifest
    last (an artifact with a manifest is complete)."""
    import numpy as np

    sizes = tuple(sorted({int(size) for size in batch_sizes}))
    extra: dict[str, Any] = {}
    wrapper = None
    if task in IMAGE_TASKS:
        height, width = image_size_of(processor)
        names: tuple[str, ...] = ("pixel_values",)
        lengths: tuple[int, ...] = (height * width,)
        extra["image_size"] = (height, width)
        patches = 0
        if task == "masked-image-modeling":
            rows, columns = patch_grid(model, (height, width))
            patches = rows * columns
            names = ("pixel_values", "bool_masked_pos")
            wrapper = reconstructing(model, *normalisation(processor))

        def example(batch: int, length: int) -> tuple[Any, ...]:
            arrays = {
                "pixel_values": np.zeros((batch, 3, height, width)),
                "bool_masked_pos": np.zeros((batch, patches), dtype=bool),
            }
            return as_tensors(arrays, names)

    elif task in AUDIO_TASKS:
        rate = sampling_rate_of(processor)
        names = audio_input_names(processor, model)
        lengths = duration_buckets(durations_s, rate)
        extra["sampling_rate"] = rate

        def example(batch: int, length: int) -> tuple[Any, ...]:
            clips = [np.zeros(length, dtype=np.float32)] * batch
            return as_tensors(audio_features(processor, clips, length, names), names)

    else:
        raise ConfigurationError(f"{task} is not an image or audio task")
    return trace_graphs(
        model_dir,
        wrapper or traceable(model, names),
        example,
        task=task,
        sizes=sizes,
        lengths=lengths,
        names=names,
        labels=labels,
        backend=backend,
        cores_per_model=cores_per_model,
        compiler_args=compiler_args,
        **extra,
    )
