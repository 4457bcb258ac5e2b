"""The default model: compiled graphs per (batch size, bucket), the tokenizer, the batcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smneuron.artifact.manifest import (
    Manifest,
    check_compatible,
    check_files,
    read_manifest,
)
from smneuron.env import remote_code_hint
from smneuron.errors import ArtifactError, PayloadTooLarge
from smneuron.serving.batcher import DynamicBatcher, Run
from smneuron.serving.shapes import choose_batch, choose_bucket, fit_tokens, pad_row
from smneuron.serving.tasks import Postprocess, postprocessor

log = logging.getLogger(__name__)

WARM_UP_TIMEOUT_S = 1800.0  # a first Neuron forward may load for minutes, never forever


@dataclass(frozen=True)
class Limits:
    """The work one request may cost (docs/serving.md "Limits"; defaults = the settings').

    Attributes:
        max_inputs: texts per request; more is a 413.
        max_text_chars: characters per text, checked before tokenizing: above it a text is
            cut to this many characters (``overflow="truncate"``) or refused with a 413.
        deadline_s: seconds a request may wait for its batches before a 504.
        max_queue: items that may wait in this worker's batcher; above it a 503.
    """

    max_inputs: int = 1000
    max_text_chars: int = 32768
    deadline_s: float = 54.0
    max_queue: int = 4096

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_inputs=settings.max_inputs,
            max_text_chars=settings.max_text_chars,
            deadline_s=settings.deadline_s,
            max_queue=settings.max_queue,
        )


@dataclass(frozen=True)
class Prediction:
    """Per-request results plus where the time went.

    ``batch_sizes``: per item, the real items of the run it was in; ``graph_batches``: the
    compiled batch size that run used.
    """

    results: list[Any]
    timings: dict[str, float]
    batch_sizes: list[int]
    graph_batches: list[int] = field(default_factory=list)


class CompiledModel:
    """One loaded artifact: call ``predict(texts, parameters)``; thread-safe.

    ``graphs`` maps (batch size, sequence length) to a graph; a run of ``n`` rows uses the
    smallest compiled batch size ≥ ``n`` (``shapes.choose_batch``).
    """

    def __init__(
        self,
        manifest: Manifest,
        tokenizer: Any,
        graphs: Mapping[tuple[int, int], Any],
        *,
        overflow: str = "truncate",
        max_delay_s: float = 0.005,
        limits: Limits | None = None,
    ) -> None:
        self.manifest = manifest
        self.limits = limits or Limits()
        self.tokenizer = tokenizer
        self.graphs = dict(graphs)
        self.overflow = overflow
        self.postprocess: Postprocess = postprocessor(manifest.task)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Tokens the tokenizer appends (e.g. [SEP]) survive truncation.
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        start = probe.index(plain[0]) if plain and plain[0] in probe else len(probe)
        self.tail = probe[start + len(plain) :]
        self.batcher = DynamicBatcher(
            self._run_batch,
            manifest.batch_size,
            max_delay_s,
            name="smneuron-batcher",
            max_queue=self.limits.max_queue,
            stall_after_s=self.limits.deadline_s,
        )

    def _run_batch(self, bucket: int, rows: list[tuple[list[int], list[int]]]) -> Run:
        import torch

        size = choose_batch(len(rows), self.manifest.batch_sizes)
        padding = [([self.pad_id] * bucket, [0] * bucket)] * (size - len(rows))
        ids = torch.tensor([row[0] for row in rows + padding], dtype=torch.long)
        mask = torch.tensor([row[1] for row in rows + padding], dtype=torch.long)
        with torch.no_grad():
            output = self.graphs[(size, bucket)](ids, mask)
        if isinstance(output, tuple | list):
            output = output[0]
        return Run(
            output[: len(rows)].float().tolist(),
            graph_batch=size,
            real_tokens=sum(sum(row[1]) for row in rows),
            computed_tokens=size * bucket,
        )

    def check_inputs(self, texts: list[str]) -> list[str]:
        """Apply the limits that hold before tokenizing: input count, characters per text."""
        limits = self.limits
        if len(texts) > limits.max_inputs:
            raise PayloadTooLarge(
                f"the request has {len(texts)} inputs, above the limit of {limits.max_inputs} "
                "per request (SMNEURON_MAX_INPUTS); split it into smaller requests"
            )
        longest = max((len(text) for text in texts), default=0)
        if longest <= limits.max_text_chars:
            return texts
        if self.overflow == "reject":
            raise PayloadTooLarge(
                f"an input has {longest} characters, above the limit of {limits.max_text_chars} "
                "(SMNEURON_MAX_TEXT_CHARS); shorten it, or serve with SMNEURON_OVERFLOW=truncate"
            )
        # The largest bucket holds far fewer tokens than this many characters: cutting here
        # keeps the tokens that survive truncation and bounds the tokenizer's work.
        return [text[: limits.max_text_chars] for text in texts]

    def encode(self, texts: list[str]) -> list[tuple[int, tuple[list[int], list[int]]]]:
        """Tokenize each text into (bucket, (ids, mask)) of the bucket's exact length."""
        texts = self.check_inputs(texts)
        encoded = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        rows = []
        for ids in encoded:
            bucket = choose_bucket(len(ids), self.manifest.sequence_lengths, self.overflow)
            rows.append((bucket, pad_row(fit_tokens(ids, bucket, self.tail), bucket, self.pad_id)))
        return rows

    def predict(
        self,
        texts: list[str],
        parameters: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> Prediction:
        """Run ``texts``; ``deadline`` (``time.monotonic()``) defaults to now + the limit's."""
        parameters = parameters or {}
        started = time.monotonic()
        if not texts:
            return Prediction(results=[], timings={}, batch_sizes=[])
        if deadline is None:
            deadline = started + self.limits.deadline_s
        rows = self.encode(texts)
        tokenized = time.monotonic()
        futures = self.batcher.submit_many(rows, deadline)
        outputs = self.batcher.wait(futures, deadline)
        done = time.monotonic()
        results = [self.postprocess(out.value, self.manifest.labels, parameters) for out in outputs]
        forward = max(out.forward_s for out in outputs)
        queued = max(out.queued_s for out in outputs)
        return Prediction(
            results=results,
            timings={
                "tokenize_ms": (tokenized - started) * 1000,
                "queue_ms": queued * 1000,
                "forward_ms": forward * 1000,
                "wait_ms": (done - tokenized) * 1000,
            },
            batch_sizes=[out.batch_size for out in outputs],
            graph_batches=[out.graph_batch for out in outputs],
        )

    def warm_up(self) -> None:
        """One forward per compiled graph, so no request pays for lazy init.

        ``size`` rows submitted at once run together on the batch-``size`` graph. The warm-up
        runs are then dropped from the batcher's stats (they are not traffic).
        """
        for size, bucket in self.manifest.graphs():
            started = time.monotonic()
            row = pad_row([self.pad_id], bucket, self.pad_id)
            futures = self.batcher.submit_many([(bucket, row)] * size)
            self.batcher.wait(futures, started + WARM_UP_TIMEOUT_S)
            log.info(
                "warm-up batch=%d bucket=%d in %.1f ms",
                size,
                bucket,
                (time.monotonic() - started) * 1000,
            )
        self.batcher.reset_stats()

    def stats(self) -> dict[str, Any]:
        """The batcher's counts: runs per compiled batch size, padding waste (rows, tokens)."""
        return self.batcher.stats()

    def health(self) -> tuple[bool, str]:
        """(ok, reason) of the batcher thread that runs this model's graphs."""
        return self.batcher.health()

    def close(self) -> None:
        self.batcher.close()


def load_compiled(
    model_dir: Path,
    backend: Any,
    *,
    overflow: str = "truncate",
    max_delay_ms: float = 5.0,
    limits: Limits | None = None,
    trust_remote_code: bool = False,
) -> CompiledModel:
    """Check the artifact against this host, then load its tokenizer and every bucket's graph.

    The tokenizer's own code (if the artifact ships any) runs only with ``trust_remote_code``.
    """
    from transformers import AutoTokenizer

    started = time.monotonic()
    manifest = read_manifest(model_dir)
    check_files(model_dir, manifest)
    check_compatible(manifest, backend.name, backend.versions())
    check_target = getattr(backend, "check_artifact", None)  # neuron: target vs host family
    if check_target is not None:
        check_target(manifest)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ArtifactError(
            f"cannot load the tokenizer from {model_dir}: {remote_code_hint(err)} The artifact "
            "must hold the tokenizer files saved with the checkpoint (save_pretrained)."
        ) from err
    graphs = {}
    for batch, length in manifest.graphs():
        path = manifest.graph_path(model_dir, length, batch)
        try:
            graphs[(batch, length)] = backend.load(path)
        except Exception as err:  # the backend's own loader errors are not ours to list
            raise ArtifactError(f"cannot load compiled graph {path}: {err}") from err
    log.info(
        "loaded artifact task=%s backend=%s batch_sizes=%s buckets=%s (%d graphs) in %.1fs",
        manifest.task,
        manifest.backend,
        list(manifest.batch_sizes),
        list(manifest.sequence_lengths),
        len(graphs),
        time.monotonic() - started,
    )
    return CompiledModel(
        manifest,
        tokenizer,
        graphs,
        overflow=overflow,
        max_delay_s=max_delay_ms / 1000.0,
        limits=limits,
    )
