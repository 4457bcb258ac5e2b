"""The handler contract: default model_fn/input_fn/predict_fn/output_fn and user overrides.

``<model_dir>/code/inference.py`` may define any of ``model_fn``, ``input_fn``, ``predict_fn``,
``output_fn`` — or ``transform_fn`` alone. Each may take a trailing ``context`` argument; it is
passed only to functions whose signature has room for it. Overrides are resolved once, at load.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from smneuron.artifact.manifest import MEDIA_TASKS, read_manifest
from smneuron.errors import (
    ArtifactError,
    ClientError,
    NotAcceptable,
    ServerError,
    SmneuronError,
    UnsupportedContentType,
)
from smneuron.serving import codecs
from smneuron.serving.model import CompiledModel, Limits, load_compiled
from smneuron.serving.safety import enforce_offline, prepare_requirements
from smneuron.serving.settings import ServingSettings

log = logging.getLogger(__name__)

USER_MODULE = "inference.py"
HOOKS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
# Positional arguments each hook takes before the optional context.
BASE_ARITY = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}


@dataclass(frozen=True)
class WorkerInfo:
    """Who this worker is: its index, its NeuronCores (None on CPU), settings and backend."""

    index: int
    cores: tuple[int, ...] | None
    settings: ServingSettings
    backend: Any


@dataclass
class Context:
    """What a user hook may read about the request and the worker."""

    worker: WorkerInfo
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    graph_batches: list[int] = field(default_factory=list)
    # time.monotonic() after which the request's batches are no longer waited for (504).
    deadline: float | None = None

    @property
    def worker_index(self) -> int:
        return self.worker.index

    @property
    def cores(self) -> tuple[int, ...] | None:
        return self.worker.cores

    @property
    def settings(self) -> ServingSettings:
        return self.worker.settings


@dataclass(frozen=True)
class Response:
    """What a stack sends: status, body, Content-Type and any extra ``headers``
    (e.g. ``Retry-After`` on a 503 from a full queue).

    ``stream``, when set, replaces ``body``: chunks to send as they come (generation with
    ``Accept: text/event-stream`` or ``application/jsonlines``); closing it stops the work.
    """

    body: bytes
    content_type: str
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    stream: Iterable[bytes] | None = None


# --------------------------------------------------------------------------------------------
# Defaults


def default_model_fn(model_dir: str | Path, context: Context) -> Any:
    settings = context.settings
    if generation_task(Path(model_dir)):
        from smneuron.serving.generation import load_generation

        return load_generation(
            Path(model_dir),
            context.worker.backend,
            max_delay_ms=settings.max_batch_delay_ms,
            limits=Limits.from_settings(settings),
            trust_remote_code=settings.trust_remote_code,
        )
    if read_manifest(Path(model_dir)).task in MEDIA_TASKS:
        from smneuron.serving.media import load_media

        return load_media(Path(model_dir), context.worker.backend, settings)
    return load_compiled(
        Path(model_dir),
        context.worker.backend,
        overflow=settings.overflow,
        max_delay_ms=settings.max_batch_delay_ms,
        limits=Limits.from_settings(settings),
        trust_remote_code=settings.trust_remote_code,
    )


def generation_task(model_dir: Path) -> bool:
    """The artifact is a generation one (``causal-lm``): served by ``serving.generation``."""
    from smneuron.artifact.generation import is_generation
    from smneuron.artifact.manifest import MANIFEST, read_manifest

    return (model_dir / MANIFEST).is_file() and is_generation(read_manifest(model_dir).task)


def default_input_fn(input_data: bytes, content_type: str, context: Context) -> codecs.Inputs:
    options = codecs.DecodeOptions(csv_header=context.settings.csv_header)
    return codecs.decode(input_data, content_type, options)


PREDICT_INPUTS = (
    'a str, a list of str, {"inputs": str, {"text", "text_pair"} or a list of them, '
    '{"source_sentence", "sentences"}, {"question", "context"} or a list of them, or '
    '{"context", "choices"} or a list of them, "parameters": dict}, {"question", "context"} '
    "or smneuron.serving.codecs.Inputs"
)


def as_inputs(data: Any) -> codecs.Inputs:
    """What an ``input_fn`` naturally returns, as ``Inputs``; anything else is a 500 that
    says which types the default ``predict_fn`` takes (the fault is in the server's code)."""
    if isinstance(data, codecs.Inputs):
        return data
    if isinstance(data, str):
        return codecs.Inputs([data], single=True)
    if isinstance(data, list | tuple) and all(isinstance(item, str) for item in data):
        return codecs.Inputs(list(data))
    if isinstance(data, dict) and "inputs" not in data and codecs.is_question(data):
        question = {key: value for key, value in data.items() if key != "parameters"}
        data = {"inputs": question, "parameters": data.get("parameters")}
    if isinstance(data, dict) and "inputs" in data:
        parameters = data.get("parameters") or {}
        if isinstance(parameters, dict):
            try:
                inputs: codecs.Inputs | None = codecs.inputs_from(data["inputs"])
            except ClientError:
                inputs = None
            if inputs is not None:
                inputs.parameters = dict(parameters)
                return inputs
    raise ServerError(
        f"the default predict_fn got {_describe(data)} from input_fn; it takes {PREDICT_INPUTS}"
    )


def _describe(data: Any) -> str:
    if isinstance(data, dict):
        return f"a dict with keys {sorted(map(str, data))[:5]}"
    if isinstance(data, list | tuple):
        kinds = sorted({type(item).__name__ for item in data})
        return f"a {type(data).__name__} of {', '.join(kinds) or 'nothing'}"
    return f"a value of type {type(data).__name__}"


def default_predict_fn(data: Any, model: CompiledModel, context: Context) -> Any:
    inputs = as_inputs(data)
    codecs.check_texts(inputs.texts)
    # Only a similarity, question or multiple-choice request passes its flag or choices: a
    # user model_fn's model need not know them.
    extra: dict[str, Any] = {}
    if inputs.similarity:
        extra["similarity"] = True
    if inputs.questions:
        extra["questions"] = True
    if inputs.choices is not None:
        extra["choices"] = inputs.choices
    if inputs.media is not None:  # a raw image or audio body
        kind = getattr(model, "media_kind", None)
        if kind != inputs.media_kind:
            takes = f"{kind} bodies or JSON" if kind else "text: send application/json, text/csv"
            raise UnsupportedContentType(
                f"{context.content_type} bodies are {inputs.media_kind}s; this model takes {takes}"
            )
        extra["media"] = inputs.media
    prediction = model.predict(
        inputs.texts,
        inputs.parameters,
        pairs=inputs.pairs,
        single=inputs.single,
        deadline=context.deadline,
        **extra,
    )
    context.timings.update(prediction.timings)
    context.batch_sizes.extend(prediction.batch_sizes)
    context.graph_batches.extend(prediction.graph_batches)
    return prediction.results


def default_output_fn(prediction: Any, accept: str, context: Context) -> bytes:
    return codecs.encode(prediction, accept)


DEFAULTS: dict[str, Callable[..., Any]] = {
    "model_fn": default_model_fn,
    "input_fn": default_input_fn,
    "predict_fn": default_predict_fn,
    "output_fn": default_output_fn,
}


# --------------------------------------------------------------------------------------------
# User overrides


def takes_context(function: Callable[..., Any], base: int) -> bool:
    """True when ``function`` has room for a context after its ``base`` positional arguments."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    if any(p.name == "context" for p in params):
        return True
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) > base


def import_user_module(code_dir: Path) -> ModuleType | None:
    """Import ``code/inference.py`` when present; a broken one is a startup error."""
    path = code_dir / USER_MODULE
    if not path.is_file():
        return None
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))  # helper modules next to inference.py import too
    spec = importlib.util.spec_from_file_location("inference", path)
    if spec is None or spec.loader is None:
        raise ArtifactError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ArtifactError(f"{path} failed to import: {type(err).__name__}: {err}") from err
    return module


@dataclass(frozen=True)
class Hook:
    function: Callable[..., Any]
    with_context: bool
    user: bool

    def __call__(self, *args: Any, context: Context) -> Any:
        if self.with_context:
            return self.function(*args, context)
        return self.function(*args)


def resolve_hooks(module: ModuleType | None) -> dict[str, Hook]:
    """The hooks to call: the user's where defined, else the defaults."""
    found = {name: getattr(module, name, None) for name in HOOKS} if module else {}
    for name, function in found.items():
        if function is not None and not callable(function):
            raise ArtifactError(f"code/inference.py: {name} is not a function")
    if found.get("transform_fn"):
        mixed = [name for name in ("input_fn", "predict_fn", "output_fn") if found.get(name)]
        if mixed:
            raise ArtifactError(
                "code/inference.py defines transform_fn together with "
                f"{', '.join(mixed)}; transform_fn replaces input_fn, predict_fn and output_fn. "
                "Keep either transform_fn or the three separate functions."
            )
    hooks = {}
    for name in HOOKS:
        user = found.get(name)
        function = user or DEFAULTS.get(name)
        if function is None:
            continue
        hooks[name] = Hook(function, takes_context(function, BASE_ARITY[name]), user is not None)
    return hooks


# --------------------------------------------------------------------------------------------
# The handler


class Handler:
    """Loads the model once and turns request bytes into response bytes."""

    def __init__(self, model: Any, hooks: dict[str, Hook], worker: WorkerInfo) -> None:
        self.model = model
        self.hooks = hooks
        self.worker = worker
        self.custom_output = hooks["output_fn"].user or "transform_fn" in hooks

    @classmethod
    def load(cls, model_dir: Path, worker: WorkerInfo) -> Handler:
        started = time.monotonic()
        enforce_offline()  # before user code or transformers is imported in this process
        prepare_requirements(model_dir / "code", worker.settings.install_requirements)
        hooks = resolve_hooks(import_user_module(model_dir / "code"))
        users = [name for name, hook in hooks.items() if hook.user]
        log.info("handler hooks from code/inference.py: %s", ", ".join(users) or "none")
        model = hooks["model_fn"](str(model_dir), context=Context(worker))
        if model is None:
            raise ArtifactError("model_fn returned None")
        handler = cls(model, hooks, worker)
        log.info("model loaded in %.1fs", time.monotonic() - started)
        return handler

    def warm_up(self) -> None:
        """Run the model once per compiled shape before reporting ready."""
        started = time.monotonic()
        warm = getattr(self.model, "warm_up", None)
        if callable(warm):
            warm()
        log.info("warm-up done in %.1fs", time.monotonic() - started)

    def health(self) -> tuple[bool, str]:
        """(ok, reason) for the runtime to poll: False when the model's batcher thread died or
        a batch has run past the request deadline (the worker should then be replaced)."""
        check = getattr(self.model, "health", None)
        if not callable(check):
            return True, "ok"
        try:
            ok, reason = check()
        except Exception as err:  # a user model's health() is not ours to trust
            return False, f"health check failed: {type(err).__name__}: {err}"
        return bool(ok), str(reason)

    def healthy(self) -> bool:
        return self.health()[0]

    def response_type(self, accept: str | None) -> str:
        default = self.worker.settings.default_accept
        if not self.custom_output:
            extra = tuple(getattr(self.model, "response_types", ()))  # e.g. image/png
            return codecs.negotiate(accept, default, (*codecs.ENCODERS, *extra) if extra else None)
        # A user output_fn/transform_fn decides what it can produce: hand it the first choice.
        first = codecs.media_type((accept or "").split(",", 1)[0])
        return default if first in ("", "*/*") else first

    def invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
    ) -> Response:
        started = time.monotonic()
        context = Context(
            self.worker,
            content_type=codecs.media_type(content_type) or codecs.JSON,
            accept=accept,
            custom_attributes=custom_attributes,
            deadline=started + self.worker.settings.deadline_s,
        )
        streamed = self.streamed(body, context, accept)
        if streamed is not None:
            return streamed
        response_type = self.response_type(accept)  # 406 before any work
        context.accept = response_type
        transform = self.hooks.get("transform_fn")
        if transform is not None:
            output = transform(
                self.model, body, context.content_type, response_type, context=context
            )
        else:
            data = self.read_input(body, context)
            decoded = time.monotonic()
            prediction = self.hooks["predict_fn"](data, self.model, context=context)
            predicted = time.monotonic()
            output = self.hooks["output_fn"](prediction, response_type, context=context)
            context.timings["decode_ms"] = (decoded - started) * 1000
            context.timings["predict_ms"] = (predicted - decoded) * 1000
            context.timings["encode_ms"] = (time.monotonic() - predicted) * 1000
        response = to_response(output, response_type)
        context.timings["total_ms"] = (time.monotonic() - started) * 1000
        log.info(
            "invocation",
            extra={
                "content_type": context.content_type,
                "accept": response.content_type,
                "bytes_in": len(body),
                "bytes_out": len(response.body),
                "batch_sizes": context.batch_sizes,
                "graph_batches": context.graph_batches,
                **{key: round(value, 2) for key, value in context.timings.items()},
            },
        )
        return response

    def streamed(self, body: bytes, context: Context, accept: str | None) -> Response | None:
        """A token stream when the client asked for one (Accept) and the model streams
        (generation) without a user predict/output/transform hook; else None."""
        from smneuron.serving.generation import encoded_stream, stream_type

        media = stream_type(accept)
        stream = getattr(self.model, "stream", None)
        if media is None or not callable(stream):
            return None
        if any(self.hooks[name].user for name in ("predict_fn", "output_fn") if name in self.hooks):
            return None
        if "transform_fn" in self.hooks:
            return None
        inputs = as_inputs(self.read_input(body, context))
        codecs.check_texts(inputs.texts)
        events = stream(inputs.texts, inputs.parameters, deadline=context.deadline)
        log.info("invocation streamed", extra={"accept": media, "bytes_in": len(body)})
        return Response(
            b"",
            media,
            headers=(("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")),
            stream=encoded_stream(events, media),
        )

    def read_input(self, body: bytes, context: Context) -> Any:
        """``input_fn``: the body was the client's, so a user hook's failure is a 400 with its
        message (a ``SmneuronError`` keeps its own status; the default decoders raise only
        ``ClientError`` on bad input, so a fault in them stays a 500)."""
        hook = self.hooks["input_fn"]
        if not hook.user:
            return hook(body, context.content_type, context=context)
        try:
            return hook(body, context.content_type, context=context)
        except SmneuronError:
            raise
        except Exception as err:
            log.info("input_fn rejected the request", exc_info=True)
            raise ClientError(str(err) or f"input_fn raised {type(err).__name__}") from err


def to_response(output: Any, content_type: str) -> Response:
    """Accept ``bytes``, ``str`` or ``(body, content_type)`` from a hook."""
    if isinstance(output, tuple) and len(output) == 2:
        output, content_type = output
    if isinstance(output, str):
        output = output.encode("utf-8")
    if isinstance(output, bytearray | memoryview):
        output = bytes(output)
    if not isinstance(output, bytes):
        if content_type not in codecs.ENCODERS and content_type not in codecs.EXTRA_ENCODERS:
            raise NotAcceptable(f"cannot encode the result as {content_type!r}")
        output = codecs.encode(output, content_type)
    return Response(output, content_type)


def error_response(err: SmneuronError) -> Response:
    """The JSON body of an error, with its status and the headers it carries."""
    import json

    return Response(
        json.dumps(err.to_dict()).encode("utf-8"),
        codecs.JSON,
        err.status_code,
        tuple((str(name), str(value)) for name, value in err.headers.items()),
    )
