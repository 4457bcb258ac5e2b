"""The default model for image and audio artifacts: decode, prepare, batch, run, answer.

A request's inputs are raw bodies (``image/jpeg``, ``audio/wav``...) or base64 strings in JSON
(``{"inputs": "<base64>"}`` or a list of them). Each is decoded (``serving.images``,
``serving.audio``), prepared by the artifact's image processor or feature extractor to the
static shape of its bucket, and run by the dynamic batcher on the smallest compiled batch
size that holds what waits — the same batching as the text model (``serving.model``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smneuron.artifact.manifest import (
    IMAGE_TASKS,
    Manifest,
    check_compatible,
    check_files,
    read_manifest,
)
from smneuron.errors import ArtifactError, ClientError, PayloadTooLarge
from smneuron.serving.batcher import DynamicBatcher, Run
from smneuron.serving.model import (
    WARM_UP_RUNS,
    WARM_UP_TIMEOUT_S,
    Limits,
    Prediction,
    load_graphs,
    read_config,
)
from smneuron.serving.shapes import choose_batch
from smneuron.serving.tasks import Head, Item, task_for

log = logging.getLogger(__name__)

NO_ITEM = Item("", ())


def from_base64(text: str, where: str) -> bytes:
    """The bytes of a base64 string (a ``data:...;base64,`` prefix and whitespace allowed)."""
    if text.startswith("data:") and "," in text[:200]:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ClientError(
            f"{where} is not base64: an image or audio model takes the file's bytes as the "
            "body, or base64 strings in JSON"
        ) from err
    if not data:
        raise ClientError(f"{where} is empty")
    return data


class MediaModel:
    """One loaded image or audio artifact; ``predict`` is thread-safe (one batcher thread)."""

    def __init__(
        self,
        manifest: Manifest,
        processor: Any,
        graphs: Mapping[tuple[int, int], Any],
        *,
        overflow: str = "truncate",
        max_delay_s: float = 0.0,
        limits: Limits | None = None,
        max_image_pixels: int = 40_000_000,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.manifest = manifest
        self.processor = processor
        self.graphs = dict(graphs)
        self.overflow = overflow
        self.limits = limits or Limits()
        self.max_image_pixels = max_image_pixels
        self.task = task_for(manifest.task)
        self.head = Head(manifest.labels, (config or {}).get("problem_type"))
        self.config = dict(config or {})
        self.is_image = manifest.task in IMAGE_TASKS
        self.media_kind = "image" if self.is_image else "audio"  # the raw bodies it takes
        mim = manifest.task == "masked-image-modeling"
        self.response_types = ("image/png",) if mim else ()  # besides the codecs' own
        self.batcher = DynamicBatcher(
            self._run_batch,
            manifest.batch_size,
            max_delay_s,
            name="smneuron-batcher",
            max_queue=self.limits.max_queue,
            stall_after_s=self.limits.deadline_s,
        )

    # ----------------------------------------------------------------------------------------
    # Preparing one input

    def patch_mask(self, options: Mapping[str, Any]) -> Any:
        """Masked image modeling: the patches to mask (``masked_patches``, else a seeded
        random ``mask_ratio`` of them), as a bool array over the patch grid."""
        import numpy as np

        from smneuron.artifact.media import patch_grid

        height, width = self.manifest.image_size
        rows, columns = patch_grid(self.config, (height, width))
        count = rows * columns
        mask = np.zeros(count, dtype=bool)
        chosen = options.get("masked_patches")
        if chosen is not None:
            outside = [p for p in chosen if p >= count]
            if outside:
                raise ClientError(
                    f'"masked_patches": {outside[:5]} outside the {rows}x{columns} = {count} '
                    "patches of this model (indices 0 to "
                    f"{count - 1}, row by row)"
                )
            mask[list(chosen)] = True
        else:
            rng = np.random.default_rng(options.get("seed", 0))
            mask[rng.permutation(count)[: round(options.get("mask_ratio", 0.0) * count)]] = True
        return mask

    def prepare(
        self, data: bytes, where: str, options: Mapping[str, Any] | None = None
    ) -> tuple[int, tuple[Any, ...], Item]:
        """(bucket, one array per graph input without the batch axis, its Item) for one input."""
        if self.is_image:
            from smneuron.artifact.media import image_pixels
            from smneuron.serving.images import decode_image

            image = decode_image(data, self.max_image_pixels, where)
            pixels = image_pixels(self.processor, [image])[0]
            height, width = self.manifest.image_size
            if tuple(pixels.shape[-2:]) != (height, width):
                raise ArtifactError(
                    f"the image processor gave {tuple(pixels.shape)} pixels, but the graphs "
                    f"take {height}x{width}: recompile the artifact with its processor"
                )
            bucket = self.manifest.sequence_lengths[0]
            if self.manifest.task == "masked-image-modeling":
                mask = self.patch_mask(options or {})
                return bucket, (pixels, mask), Item("", [int(i) for i in mask.nonzero()[0]])
            return bucket, (pixels,), NO_ITEM
        from smneuron.artifact.media import audio_features
        from smneuron.serving.audio import decode_audio

        buckets = self.manifest.sequence_lengths
        clip = decode_audio(
            data, self.manifest.sampling_rate, buckets[-1], overflow=self.overflow, where=where
        )
        bucket = next(b for b in buckets if b >= len(clip))
        arrays = audio_features(self.processor, [clip], bucket, self.manifest.input_names)
        return bucket, tuple(arrays[name][0] for name in self.manifest.input_names), NO_ITEM

    def _filler(self, bucket: int) -> tuple[Any, ...]:
        import numpy as np

        if self.is_image:
            height, width = self.manifest.image_size
            pixels = np.zeros((3, height, width), dtype=np.float32)
            if self.manifest.task == "masked-image-modeling":
                return pixels, self.patch_mask({})
            return (pixels,)
        from smneuron.artifact.media import audio_features

        arrays = audio_features(
            self.processor, [np.zeros(bucket, dtype=np.float32)], bucket, self.manifest.input_names
        )
        return tuple(arrays[name][0] for name in self.manifest.input_names)

    # ----------------------------------------------------------------------------------------
    # Running

    def _run_batch(self, bucket: int, rows: list[tuple[Any, ...]]) -> Run:
        import numpy as np
        import torch

        from smneuron.artifact.media import as_tensors

        size = choose_batch(len(rows), self.manifest.batch_sizes)
        batch = rows + [self._filler(bucket)] * (size - len(rows))
        names = self.manifest.input_names
        stacked = {name: np.stack([row[i] for row in batch]) for i, name in enumerate(names)}
        with torch.no_grad():
            output = self.graphs[(size, bucket)](*as_tensors(stacked, names))
        if isinstance(output, tuple | list):
            output = output[0]
        return Run(output[: len(rows)].float().tolist(), graph_batch=size)

    def predict(
        self,
        texts: list[str],
        parameters: Mapping[str, Any] | None = None,
        *,
        pairs: Sequence[str | None] | None = None,
        single: bool = False,
        similarity: bool = False,
        questions: bool = False,
        deadline: float | None = None,
        media: Sequence[bytes] | None = None,
    ) -> Prediction:
        """Answer raw ``media`` bodies, or base64 ``texts`` (JSON requests)."""
        started = time.monotonic()
        options = self.task.read(parameters or {}, self.head)
        kind = "image" if self.is_image else "audio"
        if similarity or questions or (pairs is not None and any(p is not None for p in pairs)):
            raise ClientError(f"{self.manifest.task} takes {kind} data, not text objects")
        count = len(media) if media is not None else len(texts)
        if count > self.limits.max_inputs:
            raise PayloadTooLarge(
                f"the request has {count} inputs, above the limit of {self.limits.max_inputs} "
                "per request (SMNEURON_MAX_INPUTS); split it into smaller requests"
            )
        if count == 0:
            return Prediction(results=[], timings={}, batch_sizes=[])
        if media is not None:
            blobs = list(media)
        else:
            blobs = [from_base64(text, f"input {i}") for i, text in enumerate(texts)]
        where = (lambda i: kind) if count == 1 else (lambda i: f"{kind} {i}")
        prepared = [self.prepare(blob, where(i), options) for i, blob in enumerate(blobs)]
        if deadline is None:
            deadline = started + self.limits.deadline_s
        ready = time.monotonic()
        futures = self.batcher.submit_many([(bucket, row) for bucket, row, _ in prepared], deadline)
        outputs = self.batcher.wait(futures, deadline)
        done = time.monotonic()
        results: Any = [
            self.task.postprocess(out.value, item, self.head, options)
            for out, (_, _, item) in zip(outputs, prepared, strict=True)
        ]
        if single and len(results) == 1:
            results = self.task.lone(results[0], False, options)
        return Prediction(
            results=results,
            timings={
                "prepare_ms": (ready - started) * 1000,
                "queue_ms": max(out.queued_s for out in outputs) * 1000,
                "forward_ms": max(out.forward_s for out in outputs) * 1000,
                "wait_ms": (done - ready) * 1000,
            },
            batch_sizes=[out.batch_size for out in outputs],
            graph_batches=[out.graph_batch for out in outputs],
        )

    def warm_up(self) -> None:
        """``WARM_UP_RUNS`` forwards per compiled graph before the worker reports ready."""
        for size, bucket in self.manifest.graphs():
            row = self._filler(bucket)
            for _ in range(WARM_UP_RUNS):
                futures = self.batcher.submit_many([(bucket, row)] * size)
                self.batcher.wait(futures, time.monotonic() + WARM_UP_TIMEOUT_S)
        self.batcher.reset_stats()

    def stats(self) -> dict[str, Any]:
        return self.batcher.stats()

    def health(self) -> tuple[bool, str]:
        return self.batcher.health()

    def close(self) -> None:
        self.batcher.close()


def load_media(model_dir: Path, backend: Any, settings: Any) -> MediaModel:
    """Check the artifact against this host, then load its processor and every graph."""
    from smneuron.artifact.media import load_processor

    started = time.monotonic()
    manifest = read_manifest(model_dir)
    check_files(model_dir, manifest)
    check_compatible(manifest, backend.name, backend.versions())
    check_target = getattr(backend, "check_artifact", None)
    if check_target is not None:
        check_target(manifest)
    try:
        processor = load_processor(
            model_dir, manifest.task, trust_remote_code=settings.trust_remote_code
        )
    except ClientError as err:  # a ConfigurationError at load is the artifact's fault
        raise ArtifactError(str(err)) from err
    graphs = load_graphs(manifest, model_dir, backend, started)
    return MediaModel(
        manifest,
        processor,
        graphs,
        overflow=settings.overflow,
        max_delay_s=settings.max_batch_delay_ms / 1000.0,
        limits=Limits.from_settings(settings),
        max_image_pixels=settings.max_image_pixels,
        config=read_config(model_dir),
    )
