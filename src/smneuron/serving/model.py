"""The default model: compiled graphs per (batch size, bucket), the tokenizer, the batcher."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
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
from smneuron.errors import ArtifactError, ClientError, PayloadTooLarge
from smneuron.serving import choices as choice_inputs
from smneuron.serving import masks
from smneuron.serving.batcher import DynamicBatcher, Run
from smneuron.serving.shapes import choose_batch, choose_bucket
from smneuron.serving.tasks import Head, Item, similarities, task_for

log = logging.getLogger(__name__)

WARM_UP_RUNS = 2  # forwards per graph before the worker says it is ready
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

    results: Any  # one answer per input; for a lone input (``single``) the pipeline's shape
    timings: dict[str, float]
    batch_sizes: list[int]
    graph_batches: list[int] = field(default_factory=list)


class SerialTokenizer:
    """A tokenizer whose methods run one call at a time.

    A fast tokenizer sets its truncation state on its shared Rust object at every call, so two
    threads of one worker calling it at once fail with ``RuntimeError: Already borrowed``
    (``make bench`` found it at 16 concurrent clients). Attributes read through unchanged.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._wrapped = tokenizer  # not `_tokenizer`: that name reads through to the Rust one
        self._lock = threading.RLock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._wrapped(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._wrapped, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


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
        max_delay_s: float = 0.0,
        limits: Limits | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.manifest = manifest
        self.limits = limits or Limits()
        self.tokenizer = SerialTokenizer(tokenizer)
        self.graphs = dict(graphs)
        self.overflow = overflow
        self.task = task_for(manifest.task)
        if self.task.offsets and not getattr(tokenizer, "is_fast", False):
            raise ArtifactError(
                f"{manifest.task} needs a fast tokenizer (character offsets); the artifact's "
                "tokenizer is a slow one: save the checkpoint with its tokenizer.json"
            )
        self.head = Head(
            manifest.labels,
            (config or {}).get("problem_type"),
            self.tokenizer,
            manifest.sequence_lengths,
            manifest.task_parameters,
            max_masks=manifest.max_masks or 1,
            choices=manifest.choices,
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.batcher = DynamicBatcher(
            self._run_batch,
            manifest.batch_size,
            max_delay_s,
            name="smneuron-batcher",
            max_queue=self.limits.max_queue,
            stall_after_s=self.limits.deadline_s,
        )

    def _padded(self, encoded: Mapping[str, Sequence[int]], bucket: int) -> tuple[list[int], ...]:
        """One list per graph input (``manifest.input_names``), right-padded to ``bucket``."""
        ids = list(encoded["input_ids"])
        fill = bucket - len(ids)
        row = []
        for name in self.manifest.input_names:
            if name == "input_ids":
                row.append(ids + [self.pad_id] * fill)
            elif name == "attention_mask":
                row.append([1] * len(ids) + [0] * fill)
            elif name == masks.MASK_POSITIONS:  # fill-mask: [max_masks], not [bucket]
                mask = self.tokenizer.mask_token_id
                row.append(masks.positions(ids, -1 if mask is None else mask, self.head.max_masks))
            else:  # token_type_ids: the tokenizer's, else the first segment's
                values = list(encoded.get(name) or [0] * len(ids))
                row.append(values + [0] * fill)
        return tuple(row)

    def _filler(self, bucket: int, ids: Sequence[int] = ()) -> tuple[Any, ...]:
        """A row of ``ids`` (padding by default), ``[choices, bucket]`` for multiple choice."""
        row = self._padded({"input_ids": list(ids)}, bucket)
        if self.manifest.choices:
            return tuple([part] * self.manifest.choices for part in row)
        return row

    def _run_batch(self, bucket: int, rows: list[tuple[Any, ...]]) -> Run:
        import torch

        size = choose_batch(len(rows), self.manifest.batch_sizes)
        filler = self._filler(bucket)
        batch = rows + [filler] * (size - len(rows))
        tensors = [
            torch.tensor([row[i] for row in batch], dtype=torch.long) for i in range(len(filler))
        ]
        with torch.no_grad():
            output = self.graphs[(size, bucket)](*tensors)
        if isinstance(output, tuple | list):
            output = output[0]
        mask = self.manifest.input_names.index("attention_mask")
        return Run(
            output[: len(rows)].float().tolist(),
            graph_batch=size,
            real_tokens=sum(_count(row[mask]) for row in rows),
            computed_tokens=size * bucket * (self.manifest.choices or 1),
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

    def _tokenize(self, text: Any, pair: Any, max_length: int | None) -> Any:
        """The tokenizer's encoding of a text (and pair), or of lists of them."""
        options: dict[str, Any] = {"add_special_tokens": True}
        if max_length is None:
            options["truncation"] = False
        else:  # longest_first: a pair loses tokens from its longer text first
            options.update(truncation="longest_first", max_length=max_length)
        if self.task.offsets:
            options.update(return_offsets_mapping=True, return_special_tokens_mask=True)
        return self.tokenizer(text, pair, **options)

    def encode(
        self, texts: list[str], pairs: Sequence[str | None] | None = None
    ) -> list[tuple[int, tuple[list[int], ...], Item]]:
        """Tokenize each input into (bucket, one padded list per graph input, its ``Item``)."""
        if pairs is not None and len(pairs) != len(texts):
            raise ClientError(f"{len(texts)} texts but {len(pairs)} text pairs")
        texts = self.check_inputs(texts)
        if pairs is not None:
            kept = self.check_inputs([pair or "" for pair in pairs])
            pairs = [
                cut if pair is not None else None for cut, pair in zip(kept, pairs, strict=True)
            ]
        if pairs is None or all(pair is not None for pair in pairs):
            batch = self._tokenize(texts, pairs, None)  # one tokenizer call for the request
            encodings = [{key: batch[key][i] for key in batch} for i in range(len(texts))]
        else:  # some inputs are pairs, some single texts
            encodings = [
                self._tokenize(text, pair, None) for text, pair in zip(texts, pairs, strict=True)
            ]
        largest = self.manifest.sequence_lengths[-1]
        rows = []
        for index, (text, encoded) in enumerate(zip(texts, encodings, strict=True)):
            pair = pairs[index] if pairs is not None else None
            bucket = choose_bucket(
                len(encoded["input_ids"]), self.manifest.sequence_lengths, self.overflow
            )
            if len(encoded["input_ids"]) > largest:  # overflow=truncate: keep the closing [SEP]
                encoded = self._tokenize(text, pair, largest)
            item = Item(
                text,
                list(encoded["input_ids"]),
                encoded.get("offset_mapping"),
                encoded.get("special_tokens_mask"),
            )
            if self.task.check is not None:
                self.task.check(index, item, self.head)
            rows.append((bucket, self._padded(encoded, bucket), item))
        return rows

    def encode_choices(
        self, contexts: list[str], options: Sequence[Sequence[str]]
    ) -> list[tuple[int, tuple[Any, ...], Item]]:
        """Multiple choice: one ``[choices, bucket]`` row per (context, choices) input."""
        if len(options) != len(contexts):
            raise ClientError(f"{len(contexts)} contexts but {len(options)} lists of choices")
        for index, listed in enumerate(options):
            choice_inputs.check_count(index, listed, self.manifest.choices)
        flat = [text for listed in options for text in listed]
        if len(flat) > self.limits.max_inputs:  # each choice is one sequence to run
            raise PayloadTooLarge(
                f"the request has {len(contexts)} inputs with {len(flat)} choices in all, above "
                f"the limit of {self.limits.max_inputs} per request (SMNEURON_MAX_INPUTS); split "
                "it into smaller requests"
            )
        contexts = self.check_inputs(contexts)
        flat = self.check_inputs(flat)
        largest = self.manifest.sequence_lengths[-1]
        rows = []
        start = 0
        for context, listed in zip(contexts, options, strict=True):
            kept = flat[start : start + len(listed)]
            start += len(listed)
            encoded = choice_inputs.encode(self.tokenizer, context, kept, None)
            longest = max(len(ids) for ids in encoded["input_ids"])
            bucket = choose_bucket(longest, self.manifest.sequence_lengths, self.overflow)
            if longest > largest:
                encoded = choice_inputs.encode(self.tokenizer, context, kept, largest)
            row = choice_inputs.padded(encoded, self.manifest.input_names, bucket, self.pad_id)
            rows.append((bucket, row, Item(context, encoded["input_ids"][0])))
        return rows

    def encode_questions(
        self, questions: list[str], contexts: Sequence[str | None], stride: int
    ) -> tuple[list[tuple[int, tuple[list[int], ...], Item]], list[tuple[Item, int, int]]]:
        """Each (question, context) as its windows: the rows to run, and per input its
        ``Item`` (the context and its windows) with the range of its rows."""
        from smneuron.serving.qa import windows

        if len(contexts) != len(questions) or any(context is None for context in contexts):
            raise ClientError('question answering takes {"question", "context"} inputs')
        questions = self.check_inputs(questions)
        kept = self.check_inputs([context or "" for context in contexts])
        largest = self.manifest.sequence_lengths[-1]
        rows: list[tuple[int, tuple[list[int], ...], Item]] = []
        groups = []
        for question, context in zip(questions, kept, strict=True):
            found = windows(self.tokenizer, question, context, largest, stride)
            item = Item(context, [], windows=found)
            groups.append((item, len(rows), len(rows) + len(found)))
            for window in found:
                bucket = choose_bucket(window.length, self.manifest.sequence_lengths, "reject")
                rows.append((bucket, self._padded(window.encoded, bucket), item))
        return rows, groups

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
        choices: Sequence[Sequence[str]] | None = None,
    ) -> Prediction:
        """Run ``texts`` (with their ``pairs``); ``deadline`` (``time.monotonic()``) defaults
        to now + the limit's. ``single``: the request held one input, so the answer takes the
        pipeline's shape for a lone input (then ``pairs`` set means it was a dict).
        ``similarity``: ``texts[0]`` is a source sentence and the answer its cosine
        similarity with each of ``texts[1:]``, all embedded in the same batched runs.
        ``questions``: ``texts`` are questions and ``pairs`` their contexts (question
        answering)."""
        parameters = parameters or {}
        started = time.monotonic()
        options = self.task.read(parameters, self.head)  # a bad parameter costs no forward
        if questions != self.task.questions:
            raise ClientError(
                f'{self.manifest.task} takes {{"question", "context"}} inputs'
                if self.task.questions
                else f'{self.manifest.task} does not answer questions ({{"question", '
                '"context"}): that needs a question-answering artifact'
            )
        pairs_given = pairs is not None and any(pair is not None for pair in pairs)
        if pairs_given and not self.task.pairs and not questions:
            raise ClientError(
                f'{self.manifest.task} takes single texts, not {{"text", "text_pair"}} pairs'
            )
        if similarity and not self.task.similarity:
            raise ClientError(
                f'{self.manifest.task} does not answer sentence similarity ({{"source_sentence", '
                '"sentences"}): that needs a feature-extraction artifact'
            )
        if self.task.needs_pairs and (pairs is None or any(pair is None for pair in pairs)):
            raise ClientError(
                f'{self.manifest.task} takes text pairs: {{"text": string, "text_pair": '
                "string}, or a list of them; an input has no second text"
            )
        if choices is not None and not self.task.choices:
            raise ClientError(
                f'{self.manifest.task} takes texts, not {{"context", "choices"}} multiple-choice '
                "inputs: that needs a multiple-choice artifact"
            )
        if self.task.choices and choices is None:
            raise ClientError(
                f"multiple-choice takes {choice_inputs.FORM}, or a list of them "
                f"({self.manifest.choices} choices each)"
            )
        if similarity and len(texts) < 2:
            raise ClientError("sentence similarity needs a source sentence and ≥ 1 sentence")
        if not texts:
            return Prediction(results=[], timings={}, batch_sizes=[])
        if deadline is None:
            deadline = started + self.limits.deadline_s
        if questions:
            encoded, groups = self.encode_questions(texts, pairs or [], options["doc_stride"])
        else:
            if choices is not None:
                encoded = self.encode_choices(texts, choices)
            else:
                encoded = self.encode(texts, pairs)
            groups = [(item, index, index + 1) for index, (_, _, item) in enumerate(encoded)]
        tokenized = time.monotonic()
        futures = self.batcher.submit_many([(bucket, row) for bucket, row, _ in encoded], deadline)
        outputs = self.batcher.wait(futures, deadline)
        done = time.monotonic()
        results: Any = [
            self.task.postprocess(
                [out.value for out in outputs[first:last]] if questions else outputs[first].value,
                item,
                self.head,
                options,
            )
            for item, first, last in groups
        ]
        if similarity:
            results = similarities(results[0], results[1:])
        elif single and len(results) == 1:
            results = self.task.lone(results[0], pairs is not None, options)
        elif self.task.unwrap_one and len(results) == 1:
            results = results[0]
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
        """``WARM_UP_RUNS`` forwards per compiled graph, so no request pays for lazy init.

        Two, because a TorchScript graph is profiled on its first call and optimised on its
        second (the CPU backend); on Neuron the first call loads the NEFF. ``size`` rows
        submitted at once run together on the batch-``size`` graph. The warm-up runs are then
        dropped from the batcher's stats (they are not traffic).
        """
        for size, bucket in self.manifest.graphs():
            row = self._filler(bucket, [self.pad_id])
            times = []
            for _ in range(WARM_UP_RUNS):
                started = time.monotonic()
                futures = self.batcher.submit_many([(bucket, row)] * size)
                self.batcher.wait(futures, started + WARM_UP_TIMEOUT_S)
                times.append((time.monotonic() - started) * 1000)
            log.info(
                "warm-up batch=%d bucket=%d in %s ms",
                size,
                bucket,
                " + ".join(f"{ms:.1f}" for ms in times),
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


def _count(values: Sequence[Any]) -> int:
    """The sum of a (nested, for multiple choice) attention mask."""
    return sum(_count(value) if isinstance(value, list) else value for value in values)


def load_graphs(
    manifest: Manifest, model_dir: Path, backend: Any, started: float
) -> dict[tuple[int, int], Any]:
    """Every graph the manifest lists, by (batch size, bucket), loaded by ``backend``; logged
    with the time since ``started``.

    Raises:
        ArtifactError: a graph the backend cannot load (its error in the message).
    """
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
    return graphs


def load_compiled(
    model_dir: Path,
    backend: Any,
    *,
    overflow: str = "truncate",
    max_delay_ms: float = 0.0,
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
    graphs = load_graphs(manifest, model_dir, backend, started)
    return CompiledModel(
        manifest,
        tokenizer,
        graphs,
        overflow=overflow,
        max_delay_s=max_delay_ms / 1000.0,
        limits=limits,
        config=read_config(model_dir),
    )


def read_config(model_dir: Path) -> dict[str, Any]:
    """The checkpoint's config.json (problem_type decides the default score function)."""
    import json

    path = model_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
