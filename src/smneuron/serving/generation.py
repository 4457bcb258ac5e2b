"""Text generation (``causal-lm``, ``seq2seq``): parameters, the static-batch decode loop, streams.

The artifact's static limits (``smneuron.artifact.generation``) hold on every backend: at most
``batch_size`` sequences per loop, prompts padded (on the left) to the smallest prompt bucket
that holds the batch's longest, and prompt + new tokens ≤ ``max_total_length`` (seq2seq: the
prompt is the encoder's input, padded on the right, and new tokens ≤ ``max_total_length``).
Batching is static: requests that arrive while a loop runs wait for the next loop (no
continuous batching).

Each sequence of a loop has its own sampling options, seed, stop strings and cancel flag, so a
request's answer does not depend on who shared its batch, and a streaming client that goes away
stops its own sequence (the loop ends when all of its sequences have).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smneuron.artifact.manifest import Manifest, check_compatible, read_manifest
from smneuron.env import remote_code_hint
from smneuron.errors import (
    ArtifactError,
    ClientError,
    DeadlineExceeded,
    PayloadTooLarge,
    SmneuronError,
)
from smneuron.serving.batcher import DynamicBatcher, Run
from smneuron.serving.model import Limits, Prediction, SerialTokenizer
from smneuron.serving.shapes import choose_bucket

log = logging.getLogger(__name__)

PARAMETERS = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "do_sample",
    "repetition_penalty",
    "stop",
    "seed",
    "return_full_text",
)
DEFAULT_MAX_NEW_TOKENS = 20  # what a Hugging Face generation config allows by default
MAX_STOP_STRINGS = 8
SSE = "text/event-stream"
JSONLINES = "application/jsonlines"
STREAM_TYPES = (SSE, JSONLINES)
WARM_UP_NEW_TOKENS = 2
_KEY = "generate"  # one queue: every prompt may share a loop, whatever its bucket


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class Options:
    """One request's generation parameters, checked (``read_parameters``)."""

    max_new_tokens: int | None = None  # None: DEFAULT_MAX_NEW_TOKENS, cut to what fits
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    do_sample: bool = False
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    return_full_text: bool = True  # the Hugging Face pipeline's default


def _number(name: str, value: Any, *, low: float, low_open: bool, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientError(f'"{name}" must be a number, got {value!r}')
    below = value <= low if low_open else value < low
    if below or (high is not None and value > high):
        bound = f"> {low:g}" if low_open else f"≥ {low:g}"
        upper = f" and ≤ {high:g}" if high is not None else ""
        raise ClientError(f'"{name}" must be {bound}{upper}, got {value!r}')
    return float(value)


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ClientError(f'"{name}" must be an integer ≥ {low}, got {value!r}')
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ClientError(f'"{name}" must be true or false, got {value!r}')
    return value


def accepted(task: str) -> tuple[str, ...]:
    """seq2seq answers the new text only: no ``return_full_text``."""
    return PARAMETERS if task == "causal-lm" else PARAMETERS[:-1]


def read_parameters(parameters: Mapping[str, Any], task: str = "causal-lm") -> Options:
    """The request's ``parameters`` as ``Options``; a ClientError (400) names a bad one."""
    names = accepted(task)
    unknown = sorted(str(name) for name in parameters if name not in names)
    if unknown:
        raise ClientError(
            f"unknown parameter(s) {', '.join(unknown)} for {task}; accepted parameters: "
            + ", ".join(names)
        )
    values: dict[str, Any] = {}
    given = {name: value for name, value in parameters.items() if value is not None}
    if "max_new_tokens" in given:
        values["max_new_tokens"] = _integer("max_new_tokens", given["max_new_tokens"], 1)
    if "temperature" in given:
        values["temperature"] = _number(
            "temperature", given["temperature"], low=0, low_open=True, high=None
        )
    if "top_p" in given:
        values["top_p"] = _number("top_p", given["top_p"], low=0, low_open=True, high=1)
    if "top_k" in given:
        values["top_k"] = _integer("top_k", given["top_k"], 0)
    if "do_sample" in given:
        values["do_sample"] = _flag("do_sample", given["do_sample"])
    if "repetition_penalty" in given:
        values["repetition_penalty"] = _number(
            "repetition_penalty", given["repetition_penalty"], low=0, low_open=True, high=None
        )
    if "return_full_text" in given:
        values["return_full_text"] = _flag("return_full_text", given["return_full_text"])
    if "seed" in given:
        values["seed"] = _integer("seed", given["seed"], 0)
    if "stop" in given:
        stop = given["stop"]
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or not all(isinstance(item, str) and item for item in stops)
            or len(stops) > MAX_STOP_STRINGS
        ):
            raise ClientError(
                f'"stop" must be a non-empty string or a list of at most {MAX_STOP_STRINGS} '
                f"of them, got {stop!r}"
            )
        values["stop"] = tuple(stops)
    return Options(**values)


# --------------------------------------------------------------------------------------------
# The loop


@dataclass(frozen=True)
class Outcome:
    """A finished sequence: its new text, tokens, and why it ended
    (``eos``, ``length``, ``stop``, ``cancelled``, ``deadline``)."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str


@dataclass(frozen=True)
class Token:
    """One new token of a sequence as a client sees it.

    ``text`` is the part of the new text that can no longer change (held back from the last
    space, where a tokenizer's decoding may still merge it with what follows); the texts of a
    sequence's tokens concatenate to its ``generated`` text. ``final`` marks the last token,
    which carries the rest of the text.
    """

    id: int
    text: str
    outcome: Outcome | None = None  # set on the last token

    @property
    def final(self) -> bool:
        return self.outcome is not None


@dataclass
class Prompt:
    """One prompt in a loop: its tokens, options, where its tokens go, and its outcome."""

    prompt: str
    ids: list[int]
    max_new_tokens: int
    options: Options
    deadline: float | None = None
    sink: Callable[[Token], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class _State:
    """The loop's bookkeeping for one sequence."""

    def __init__(self, seq: Prompt, tokenizer: Any, decoder: Any) -> None:
        self.seq = seq
        self.tokenizer = tokenizer
        self.generated: list[int] = []
        # Causal: the prompt is the start of the sequence; seq2seq: the decoder's start token.
        self.context = list(seq.ids) if decoder.causal else []
        self.seen = list(seq.ids) if decoder.causal else [decoder.start_id]
        self.prompt_chars = len(tokenizer.decode(self.context, skip_special_tokens=True))
        self.text = ""
        self.sent = ""
        self.reason: str | None = None
        self.generator = None
        if seq.options.do_sample:
            import torch

            self.generator = torch.Generator()
            if seq.options.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seq.options.seed)

    def add(self, token: int, eos: set[int]) -> None:
        self.generated.append(token)
        # As the pipeline does: the new text is what decoding the whole sequence adds to the
        # decoded prompt (a tokenizer may put the space between them on either side).
        full = self.tokenizer.decode(self.context + self.generated, skip_special_tokens=True)
        self.text = full[self.prompt_chars :]
        if token in eos:
            self.reason = "eos"
        for stop in self.seq.options.stop:
            at = self.text.find(stop)
            if at >= 0:
                self.text = self.text[: at + len(stop)]
                self.reason = "stop"
                break
        if self.reason is None and len(self.generated) >= self.seq.max_new_tokens:
            self.reason = "length"
        if self.seq.sink is not None:
            delta = self._delta()
            self.seq.sink(Token(token, delta, self.outcome() if self.reason else None))

    def _delta(self) -> str:
        if self.reason is not None:
            stable = self.text
        else:
            cut = max(self.text.rfind(" "), self.text.rfind("\n"))
            stable = self.text[:cut] if cut > 0 else ""
            stable = stable.rstrip("\ufffd")  # half of a multi-byte character
        if not stable.startswith(self.sent) or len(stable) <= len(self.sent):
            return ""
        delta, self.sent = stable[len(self.sent) :], stable
        return delta

    def outcome(self) -> Outcome:
        return Outcome(self.text, tuple(self.generated), self.reason or "cancelled")


def choose_next(logits: Any, state: _State, seen: Any) -> int:
    """The next token of one sequence from its last logits (1-D), by its options."""
    import torch

    options = state.seq.options
    scores = logits.float()
    if options.repetition_penalty != 1.0:
        previous = scores.gather(0, seen)
        previous = torch.where(
            previous < 0,
            previous * options.repetition_penalty,
            previous / options.repetition_penalty,
        )
        scores = scores.scatter(0, seen, previous)
    if not options.do_sample:
        return int(torch.argmax(scores))
    scores = scores / options.temperature
    if options.top_k and options.top_k < scores.numel():
        kth = torch.topk(scores, options.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if options.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=0).cumsum(0)
        drop = cumulative - torch.softmax(ordered, dim=0) >= options.top_p  # keep ≥ 1 token
        scores = scores.scatter(0, order, ordered.masked_fill(drop, float("-inf")))
    probabilities = torch.softmax(scores, dim=0)
    return int(torch.multinomial(probabilities, 1, generator=state.generator))


class Decoder:
    """The eager Hugging Face causal LM behind a (start, step) interface with a KV cache.

    Prompts are padded on the left, so every row's next token is at the last position.
    """

    causal = True
    start_id = 0

    def __init__(self, model: Any) -> None:
        import inspect

        self.model = model.eval()
        self.positions = "position_ids" in inspect.signature(model.forward).parameters

    def _forward(self, ids: Any, mask: Any, past: Any) -> tuple[Any, Any]:
        import torch

        extra: dict[str, Any] = {}
        if self.positions:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            extra["position_ids"] = positions[:, -ids.shape[1] :]
        with torch.no_grad():
            out = self.model(
                input_ids=ids, attention_mask=mask, past_key_values=past, use_cache=True, **extra
            )
        return out.logits[:, -1, :], (mask, out.past_key_values)

    def pad(self, row: list[int], bucket: int, pad_id: int) -> tuple[list[int], list[int]]:
        fill = bucket - len(row)
        return [pad_id] * fill + row, [0] * fill + [1] * len(row)

    def start(self, ids: Any, mask: Any) -> tuple[Any, Any]:
        """Logits of each row's next token after its prompt, and the loop's state."""
        return self._forward(ids, mask, None)

    def step(self, tokens: Any, state: Any) -> tuple[Any, Any]:
        """Logits after one more token per row (``tokens``: [batch])."""
        import torch

        mask, past = state
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype)], dim=1)
        return self._forward(tokens.unsqueeze(1), mask, past)


class EncoderDecoder:
    """An eager Hugging Face encoder-decoder (T5, BART): the encoder runs once per loop on the
    right-padded prompts, the decoder one token at a time from its start token."""

    causal = False

    def __init__(self, model: Any, start_id: int) -> None:
        self.model = model.eval()
        self.start_id = start_id

    def pad(self, row: list[int], bucket: int, pad_id: int) -> tuple[list[int], list[int]]:
        fill = bucket - len(row)
        return row + [pad_id] * fill, [1] * len(row) + [0] * fill

    def start(self, ids: Any, mask: Any) -> tuple[Any, Any]:
        import torch

        with torch.no_grad():
            encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask)
        first = torch.full((ids.shape[0],), self.start_id, dtype=torch.long)
        return self.step(first, (encoded, mask, None))

    def step(self, tokens: Any, state: Any) -> tuple[Any, Any]:
        import torch

        encoded, mask, past = state
        with torch.no_grad():
            out = self.model(
                encoder_outputs=encoded,
                attention_mask=mask,
                decoder_input_ids=tokens.unsqueeze(1),
                past_key_values=past,
                use_cache=True,
            )
        return out.logits[:, -1, :], (encoded, mask, out.past_key_values)


def run_loop(
    decoder: Decoder | EncoderDecoder,
    tokenizer: Any,
    seqs: Sequence[Prompt],
    *,
    batch_size: int,
    bucket: int,
    pad_id: int,
    eos: set[int],
) -> list[Outcome]:
    """Generate for ``seqs`` (≤ ``batch_size``) in one static batch of ``batch_size`` rows,
    each prompt padded to ``bucket``; filler rows are one pad token each."""
    import torch

    states = [_State(seq, tokenizer, decoder) for seq in seqs]
    rows = [seq.ids for seq in seqs] + [[pad_id]] * (batch_size - len(seqs))
    padded = [decoder.pad(list(row), bucket, pad_id) for row in rows]
    ids = torch.tensor([row for row, _ in padded], dtype=torch.long)
    mask = torch.tensor([row_mask for _, row_mask in padded], dtype=torch.long)
    logits, loop = decoder.start(ids, mask)
    steps = max(seq.max_new_tokens for seq in seqs)
    for _ in range(steps):
        now = time.monotonic()
        picked = []
        for row, state in enumerate(states):
            if state.reason is None:
                if state.seq.cancelled.is_set():
                    state.reason = "cancelled"
                elif state.seq.deadline is not None and now >= state.seq.deadline:
                    state.reason = "deadline"
            if state.reason is not None:
                picked.append(pad_id)
                continue
            seen = torch.tensor(state.seen + state.generated, dtype=torch.long)
            token = choose_next(logits[row], state, seen)
            state.add(token, eos)
            picked.append(token)
        if all(state.reason is not None for state in states):
            break
        picked += [pad_id] * (batch_size - len(states))
        logits, loop = decoder.step(torch.tensor(picked, dtype=torch.long), loop)
    return [state.outcome() for state in states]


class NeuronCausal:
    """A causal LM compiled by optimum-neuron (``smneuron.neuron.generation``): a loop is one
    ``generate`` over the compiled batch, whose sampling options all its sequences share.

    Prompts are padded on the left as for the eager decoder. Its compiled sampler takes no
    logits processors, so ``repetition_penalty`` is refused (400).
    """

    causal = True
    start_id = 0
    repetition_penalty = False

    def __init__(self, model: Any) -> None:
        self.model = model

    def pad(self, row: list[int], bucket: int, pad_id: int) -> tuple[list[int], list[int]]:
        fill = bucket - len(row)
        return [pad_id] * fill + row, [0] * fill + [1] * len(row)


class NeuronSeq2Seq:
    """An encoder-decoder traced by optimum-neuron: a loop is one greedy ``generate`` over the
    compiled batch, every prompt padded on the right to the one ``sequence_length`` the encoder
    was traced for. Its traced decoder picks the next token in the graph, so ``do_sample`` and
    ``repetition_penalty`` are refused (400)."""

    causal = False
    repetition_penalty = False
    sampling = False

    def __init__(self, model: Any, start_id: int, sequence_length: int) -> None:
        self.model = model
        self.start_id = start_id
        self.sequence_length = sequence_length

    def pad(self, row: list[int], bucket: int, pad_id: int) -> tuple[list[int], list[int]]:
        fill = bucket - len(row)
        return row + [pad_id] * fill, [1] * len(row) + [0] * fill


COMPILED = (NeuronCausal, NeuronSeq2Seq)


def sampling_arguments(options: Options) -> dict[str, Any]:
    """``generate``'s sampling arguments for a loop's shared options."""
    if not options.do_sample:
        return {"do_sample": False}
    return {
        "do_sample": True,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p,
    }


def run_generate(
    decoder: NeuronCausal | NeuronSeq2Seq,
    tokenizer: Any,
    seqs: Sequence[Prompt],
    *,
    batch_size: int,
    bucket: int,
    pad_id: int,
    eos: set[int],
) -> list[Outcome]:
    """``run_loop`` for a compiled decoder: one ``generate`` of ``batch_size`` rows whose
    every new token goes through each sequence's own bookkeeping (stop strings, its length,
    its stream, its cancel flag and deadline). ``seqs`` share their sampling options."""
    import torch

    from smneuron.neuron.generation import generate_seq2seq, generate_static

    states = [_State(seq, tokenizer, decoder) for seq in seqs]
    rows = [seq.ids for seq in seqs] + [[pad_id]] * (batch_size - len(seqs))
    padded = [decoder.pad(list(row), bucket, pad_id) for row in rows]
    ids = torch.tensor([row for row, _ in padded], dtype=torch.long)
    mask = torch.tensor([row_mask for _, row_mask in padded], dtype=torch.long)
    options = seqs[0].options
    if options.do_sample and options.seed is not None:
        torch.manual_seed(options.seed)  # the loop's sampler: seeds never share a loop

    def on_tokens(tokens: list[int]) -> list[bool]:
        now = time.monotonic()
        for state, token in zip(states, tokens, strict=False):
            if state.reason is not None:
                continue
            if state.seq.cancelled.is_set():
                state.reason = "cancelled"
            elif state.seq.deadline is not None and now >= state.seq.deadline:
                state.reason = "deadline"
            else:
                state.add(token, eos)
        return [state.reason is not None for state in states] + [True] * (len(tokens) - len(states))

    max_new_tokens = max(seq.max_new_tokens for seq in seqs)
    if isinstance(decoder, NeuronSeq2Seq):
        generate_seq2seq(
            decoder.model,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            eos_token_ids=sorted(eos),
            on_tokens=on_tokens,
        )
    else:
        generate_static(
            decoder.model,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            sampling=sampling_arguments(options),
            pad_token_id=pad_id,
            eos_token_ids=sorted(eos),
            on_tokens=on_tokens,
        )
    return [state.outcome() for state in states]


# --------------------------------------------------------------------------------------------
# The model


def answer(prompt: str, outcome: Outcome, options: Options, task: str) -> dict[str, str]:
    """``{"generated_text"}``; causal-lm with ``return_full_text``: the prompt + the new text
    (seq2seq: always the new text, as the text2text-generation pipeline answers)."""
    full = task == "causal-lm" and options.return_full_text
    return {"generated_text": prompt + outcome.text if full else outcome.text}


class GenerationModel:
    """One loaded generation artifact: ``predict`` (whole answers) and ``stream`` (tokens)."""

    def __init__(
        self,
        manifest: Manifest,
        tokenizer: Any,
        decoder: Decoder | EncoderDecoder | NeuronCausal | NeuronSeq2Seq,
        *,
        eos: set[int],
        max_delay_s: float = 0.0,
        limits: Limits | None = None,
    ) -> None:
        self.manifest = manifest
        self.limits = limits or Limits()
        self.tokenizer = SerialTokenizer(tokenizer)
        self.decoder = decoder
        self.eos = eos
        self.pad_id = next(
            (
                value
                for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, *sorted(eos))
                if value is not None
            ),
            0,
        )
        self.bos_id = tokenizer.bos_token_id
        self.max_total_length = int(manifest.task_parameters["max_total_length"])
        # A loop may run for the request deadline and one step past it before it ends.
        self.batcher = DynamicBatcher(
            self._run,
            manifest.batch_size,
            max_delay_s,
            name="smneuron-generate",
            max_queue=self.limits.max_queue,
            stall_after_s=2 * self.limits.deadline_s,
        )

    # -- requests --------------------------------------------------------------------------

    def _sequences(
        self, texts: list[str], options: Options, deadline: float | None
    ) -> list[Prompt]:
        """Tokenize and check each prompt against the artifact's limits (413 / 400)."""
        if len(texts) > self.limits.max_inputs:
            raise PayloadTooLarge(
                f"the request has {len(texts)} prompts, above the limit of "
                f"{self.limits.max_inputs} per request (SMNEURON_MAX_INPUTS)"
            )
        largest = self.manifest.sequence_lengths[-1]
        causal = self.decoder.causal
        if options.repetition_penalty != 1.0 and not getattr(
            self.decoder, "repetition_penalty", True
        ):
            raise ClientError(
                '"repetition_penalty" is not supported by this Neuron artifact (its compiled '
                "sampler takes no logits processors); leave it at 1.0"
            )
        if options.do_sample and not getattr(self.decoder, "sampling", True):
            raise ClientError(
                '"do_sample" is not supported by this Neuron seq2seq artifact (its traced '
                "decoder picks the next token greedily in the graph); leave it false"
            )
        seqs = []
        for text in texts:
            if len(text) > self.limits.max_text_chars:
                raise PayloadTooLarge(
                    f"a prompt has {len(text)} characters, above the limit of "
                    f"{self.limits.max_text_chars} (SMNEURON_MAX_TEXT_CHARS)"
                )
            # As the pipelines do: text-generation adds no special tokens, text2text does.
            ids = list(self.tokenizer(text, add_special_tokens=not causal)["input_ids"])
            if not ids:
                if self.bos_id is None:
                    raise ClientError("the prompt is empty and the tokenizer has no BOS token")
                ids = [self.bos_id]
            if len(ids) > largest:
                raise PayloadTooLarge(
                    f"the prompt has {len(ids)} tokens, above the largest prompt bucket of "
                    f"{largest} tokens this artifact was compiled for; shorten the prompt"
                )
            room = self.max_total_length - (len(ids) if causal else 0)
            wanted = options.max_new_tokens
            if wanted is not None and wanted > room:
                if causal:
                    raise ClientError(
                        f'"max_new_tokens" {wanted} does not fit: the prompt has {len(ids)} '
                        f"tokens and the artifact's max_total_length is {self.max_total_length} "
                        f"(prompt + new tokens), so at most {room} new tokens"
                    )
                raise ClientError(
                    f'"max_new_tokens" {wanted} is above the artifact\'s max_total_length of '
                    f"{room} (new tokens of a seq2seq answer)"
                )
            count = wanted if wanted is not None else min(DEFAULT_MAX_NEW_TOKENS, room)
            seqs.append(Prompt(text, ids, count, options, deadline))
        return seqs

    def predict(
        self,
        texts: list[str],
        parameters: Mapping[str, Any] | None = None,
        *,
        pairs: Sequence[str | None] | None = None,
        single: bool = False,
        deadline: float | None = None,
        **_: Any,
    ) -> Prediction:
        """One answer per prompt, in the text-generation pipeline's shapes: a lone prompt
        gets ``[{"generated_text"}]``, a list one such list per prompt."""
        started = time.monotonic()
        options = read_parameters(parameters or {}, self.manifest.task)
        if pairs is not None and any(pair is not None for pair in pairs):
            raise ClientError('causal-lm takes prompts (strings), not {"text", "text_pair"}')
        if not texts:
            return Prediction(results=[], timings={}, batch_sizes=[])
        if deadline is None:
            deadline = started + self.limits.deadline_s
        seqs = self._sequences(texts, options, deadline)
        tokenized = time.monotonic()
        key = self.loop_key(options)
        futures = self.batcher.submit_many([(key, seq) for seq in seqs], deadline)
        try:
            outputs = self.batcher.wait(futures, deadline)
        except DeadlineExceeded:
            for seq in seqs:
                seq.cancelled.set()
            raise
        if any(out.value.finish_reason == "deadline" for out in outputs):
            raise DeadlineExceeded(
                "the generation did not finish within the request deadline "
                "(SMNEURON_REQUEST_DEADLINE_S); ask for fewer max_new_tokens, or stream"
            )
        answers = [
            [answer(seq.prompt, out.value, options, self.manifest.task)]
            for seq, out in zip(seqs, outputs, strict=True)
        ]
        return Prediction(
            results=answers[0] if single and len(answers) == 1 else answers,
            timings={
                "tokenize_ms": (tokenized - started) * 1000,
                "queue_ms": max(out.queued_s for out in outputs) * 1000,
                "forward_ms": max(out.forward_s for out in outputs) * 1000,
            },
            batch_sizes=[out.batch_size for out in outputs],
            graph_batches=[out.graph_batch for out in outputs],
        )

    def stream(
        self,
        texts: list[str],
        parameters: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Check the request (errors raise here, before any byte is sent), then return an
        iterator of events: one per new token, the last with the whole ``generated_text``.
        Closing the iterator early (the client went away) stops the sequence."""
        options = read_parameters(parameters or {}, self.manifest.task)
        if len(texts) != 1:
            raise ClientError(f"streaming takes one prompt, got {len(texts)}")
        if deadline is None:
            deadline = time.monotonic() + self.limits.deadline_s
        tokens: queue.Queue[Token] = queue.Queue()
        (seq,) = self._sequences(texts, options, deadline)
        seq.sink = tokens.put
        (future,) = self.batcher.submit_many([(self.loop_key(options), seq)], deadline)
        return self._events(seq, tokens, future, options)

    def _events(
        self, seq: Prompt, tokens: queue.Queue[Token], future: Any, options: Options
    ) -> Iterator[dict[str, Any]]:
        try:
            while True:
                try:
                    token = tokens.get(timeout=0.2)
                except queue.Empty:
                    if not future.done():
                        continue
                    if not tokens.empty():
                        continue
                    error = future.exception()
                    if error is None:
                        reason = future.result().value.finish_reason
                        error = DeadlineExceeded(
                            f"the generation stopped before its end ({reason}): the request "
                            "deadline passed (SMNEURON_REQUEST_DEADLINE_S)"
                        )
                    yield {"error": _message(error), "error_type": type(error).__name__}
                    return
                event: dict[str, Any] = {
                    "token": {"id": token.id, "text": token.text},
                    "generated_text": None,
                }
                if token.outcome is not None:
                    outcome = token.outcome
                    event["generated_text"] = answer(
                        seq.prompt, outcome, options, self.manifest.task
                    )["generated_text"]
                    event["details"] = {
                        "finish_reason": outcome.finish_reason,
                        "generated_tokens": len(outcome.token_ids),
                    }
                    yield event
                    return
                yield event
        finally:
            seq.cancelled.set()  # a no-op once finished; stops the sequence of a gone client

    def loop_key(self, options: Options) -> Any:
        """Which requests may share a loop: any (the eager loop samples per sequence), or,
        on a compiled decoder, those with the same sampling options and seed."""
        if not isinstance(self.decoder, NeuronCausal):
            return _KEY  # the eager loops, and the greedy-only seq2seq
        seed = options.seed if options.do_sample else None
        return (_KEY, *sampling_arguments(options).values(), seed)

    # -- the batcher thread ----------------------------------------------------------------

    def _run(self, key: Any, seqs: list[Prompt]) -> Run:
        longest = max(len(seq.ids) for seq in seqs)
        bucket = choose_bucket(longest, self.manifest.sequence_lengths, "reject")
        if isinstance(self.decoder, NeuronSeq2Seq):
            bucket = self.decoder.sequence_length  # the one length its encoder was traced for
        loop = run_generate if isinstance(self.decoder, COMPILED) else run_loop
        outcomes = loop(
            self.decoder,  # type: ignore[arg-type]
            self.tokenizer,
            seqs,
            batch_size=self.manifest.batch_size,
            bucket=bucket,
            pad_id=self.pad_id,
            eos=self.eos,
        )
        log.info(
            "generation loop rows=%d batch=%d bucket=%d new_tokens=%s finish=%s",
            len(seqs),
            self.manifest.batch_size,
            bucket,
            [len(outcome.token_ids) for outcome in outcomes],
            [outcome.finish_reason for outcome in outcomes],
        )
        return Run(
            outcomes,
            graph_batch=self.manifest.batch_size,
            real_tokens=sum(len(seq.ids) for seq in seqs),
            computed_tokens=self.manifest.batch_size * bucket,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def warm_up(self) -> None:
        """One generation of ``WARM_UP_NEW_TOKENS`` per prompt bucket at the full batch."""
        for bucket in self.manifest.sequence_lengths:
            started = time.monotonic()
            seqs = [
                Prompt("", [self.pad_id] * bucket, WARM_UP_NEW_TOKENS, Options())
                for _ in range(self.manifest.batch_size)
            ]
            key = self.loop_key(Options())
            futures = self.batcher.submit_many([(key, seq) for seq in seqs])
            self.batcher.wait(futures, started + 1800.0)
            log.info(
                "warm-up generation batch=%d bucket=%d in %.1f ms",
                self.manifest.batch_size,
                bucket,
                (time.monotonic() - started) * 1000,
            )
        self.batcher.reset_stats()

    def stats(self) -> dict[str, Any]:
        return self.batcher.stats()

    def health(self) -> tuple[bool, str]:
        return self.batcher.health()

    def close(self) -> None:
        self.batcher.close()


def _message(error: BaseException) -> str:
    if isinstance(error, SmneuronError):
        return error.message
    log.error("generation failed", exc_info=error)
    return "the generation failed; see the server log"


def eos_ids(config: Mapping[str, Any], generation_config: Mapping[str, Any]) -> set[int]:
    found: set[int] = set()
    for source in (generation_config, config):
        value = source.get("eos_token_id")
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, int))
    return found


def _start_id(config: Mapping[str, Any], generation: Mapping[str, Any]) -> int:
    start = generation.get("decoder_start_token_id", config.get("decoder_start_token_id"))
    if not isinstance(start, int):
        raise ArtifactError("the seq2seq model's config has no decoder_start_token_id")
    return start


def load_generation(
    model_dir: Path,
    backend: Any,
    *,
    max_delay_ms: float = 0.0,
    limits: Limits | None = None,
    trust_remote_code: bool = False,
) -> GenerationModel:
    """Check the artifact against this host, then load its tokenizer and model."""
    import transformers

    started = time.monotonic()
    manifest = read_manifest(model_dir)
    check_compatible(manifest, backend.name, backend.versions())
    compiled = manifest.files.get("neuron")
    if backend.name != "cpu" and not compiled:
        raise ArtifactError(
            f"serving {manifest.task} on the {backend.name} backend is not implemented yet; "
            "serve the CPU artifact (`smneuron compile --backend cpu`)"
        )
    if "max_total_length" not in manifest.task_parameters:
        raise ArtifactError(f"manifest.json of a {manifest.task} artifact lacks generation limits")
    causal = manifest.task == "causal-lm"
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForSeq2SeqLM
    options = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    decoder: Decoder | EncoderDecoder | NeuronCausal | NeuronSeq2Seq
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), **options)
        if backend.name != "cpu":
            from smneuron.neuron import generation as neuron

            config = transformers.AutoConfig.from_pretrained(str(model_dir), **options).to_dict()
            try:
                generation = transformers.GenerationConfig.from_pretrained(
                    str(model_dir), local_files_only=True
                ).to_dict()
            except OSError:  # a checkpoint saved without generation_config.json
                generation = {}
            if causal:
                decoder = NeuronCausal(neuron.load_causal_lm(model_dir / str(compiled)))
            else:
                length = manifest.task_parameters.get("sequence_length")
                if not isinstance(length, int):
                    raise ArtifactError(
                        "manifest.json of a Neuron seq2seq artifact lacks "
                        "task_parameters.sequence_length (the traced encoder length)"
                    )
                decoder = NeuronSeq2Seq(
                    neuron.load_seq2seq(model_dir / str(compiled)),
                    _start_id(config, generation),
                    length,
                )
        else:
            model = auto.from_pretrained(str(model_dir), **options)
            generation_config = getattr(model, "generation_config", None)
            generation = generation_config.to_dict() if generation_config else {}
            config = model.config.to_dict()
            decoder = Decoder(model)
            if not causal:
                decoder = EncoderDecoder(model, _start_id(config, generation))
    except (OSError, ValueError) as err:
        raise ArtifactError(
            f"cannot load the {manifest.task} model from {model_dir}: {remote_code_hint(err)}"
        ) from err
    eos = eos_ids(config, generation)
    log.info(
        "loaded generation artifact batch=%d prompt buckets=%s max_total_length=%s in %.1fs",
        manifest.batch_size,
        list(manifest.sequence_lengths),
        manifest.task_parameters["max_total_length"],
        time.monotonic() - started,
    )
    return GenerationModel(
        manifest,
        tokenizer,
        decoder,
        eos=eos,
        max_delay_s=max_delay_ms / 1000.0,
        limits=limits,
    )


# --------------------------------------------------------------------------------------------
# Stream encodings


def encode_event(event: Mapping[str, Any], media_type: str) -> bytes:
    """One event as a Server-Sent Event (``data: {...}\\n\\n``; an error as ``event: error``)
    or as one JSON Lines line."""
    data = json.dumps(event)  # ASCII: no client can misread the charset
    if media_type == JSONLINES:
        return (data + "\n").encode("utf-8")
    prefix = "event: error\n" if "error" in event else ""
    return f"{prefix}data: {data}\n\n".encode()


def stream_type(accept: str | None) -> str | None:
    """The stream encoding a client asked for with its Accept header, or None."""
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in STREAM_TYPES:
            return media
    return None


def encoded_stream(events: Iterator[dict[str, Any]], media_type: str) -> Iterator[bytes]:
    """Bytes to send; closing it closes ``events`` (and so stops the generation)."""
    try:
        for event in events:
            yield encode_event(event, media_type)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
