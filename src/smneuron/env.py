"""Every environment variable the package reads: one registry of name, type, default, meaning.

``ENV.SERVER`` is a variable's name (``"SMNEURON_SERVER"``); ``VARIABLES[ENV.SERVER]`` is its
declaration, whose ``read(environ)`` parses the value with a parser from ``smneuron.typed``
(empty or unset: the default). Settings objects call ``read`` once and keep the result in a
frozen dataclass. ``smneuron env --markdown`` renders docs/configuration.md from ``VARIABLES``;
a unit test keeps the committed page equal to it. Nothing here runs at import time.

Variables that the toolkit only *writes* for a library underneath (``OMP_NUM_THREADS``,
``GLOO_SOCKET_IFNAME``, ``FI_PROVIDER``…) stay constants next to the code that sets them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smneuron.typed import PARSERS, one_of, within


class ENV:
    """Names of every environment variable the toolkit reads (declared in ``VARIABLES``)."""

    # General
    BASE_DIR = "SAGEMAKER_BASE_DIR"
    ACCELERATOR = "SMNEURON_ACCELERATOR"
    LOG_LEVEL = "SMNEURON_LOG_LEVEL"
    TRUST_REMOTE_CODE = "SMNEURON_TRUST_REMOTE_CODE"
    # Serving (names SageMaker already uses are kept)
    SERVER = "SMNEURON_SERVER"
    LOG_FORMAT = "SMNEURON_LOG_FORMAT"
    BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
    MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
    MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
    MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
    MODEL_SERVER_VMARGS = "SAGEMAKER_MODEL_SERVER_VMARGS"
    MAX_CONCURRENT_TRANSFORMS = "SMNEURON_MAX_CONCURRENT_TRANSFORMS"
    BATCH_STRATEGY = "SMNEURON_BATCH_STRATEGY"
    DEFAULT_ACCEPT = "SMNEURON_DEFAULT_ACCEPT"
    THREADS_PER_WORKER = "SMNEURON_THREADS_PER_WORKER"
    TORCH_THREADS = "SMNEURON_TORCH_THREADS"
    MAX_BATCH_DELAY_MS = "SMNEURON_MAX_BATCH_DELAY_MS"
    OVERFLOW = "SMNEURON_OVERFLOW"
    JAVA_HOME = "JAVA_HOME"
    XDG_CACHE_HOME = "XDG_CACHE_HOME"
    # Serving handler limits and decoding (docs/serving.md "Limits")
    MAX_INPUTS = "SMNEURON_MAX_INPUTS"
    MAX_TEXT_CHARS = "SMNEURON_MAX_TEXT_CHARS"
    MAX_IMAGE_PIXELS = "SMNEURON_MAX_IMAGE_PIXELS"
    REQUEST_DEADLINE_S = "SMNEURON_REQUEST_DEADLINE_S"
    MAX_QUEUE = "SMNEURON_MAX_QUEUE"
    CSV_HEADER = "SMNEURON_CSV_HEADER"
    INSTALL_MODEL_REQUIREMENTS = "SMNEURON_INSTALL_MODEL_REQUIREMENTS"
    # Training
    MASTER_PORT = "SMNEURON_MASTER_PORT"
    RANK = "RANK"
    WORLD_SIZE = "WORLD_SIZE"
    # Script mode (the SageMaker training toolkit's names, then ours)
    SAGEMAKER_PROGRAM = "SAGEMAKER_PROGRAM"
    SAGEMAKER_SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"
    TRAINING_JOB_NAME = "TRAINING_JOB_NAME"
    SAGEMAKER_TRAINING_MODULE = "SAGEMAKER_TRAINING_MODULE"
    S3_ENDPOINT_URL = "S3_ENDPOINT_URL"
    INSTALL_REQUIREMENTS = "SMNEURON_INSTALL_REQUIREMENTS"
    SCRIPT_STOP_GRACE_S = "SMNEURON_SCRIPT_STOP_GRACE_S"
    # Neuron
    NEURON_VISIBLE_CORES = "NEURON_RT_VISIBLE_CORES"
    NEURON_NUM_CORES = "NEURON_RT_NUM_CORES"
    INSTANCE_TYPE = "SMNEURON_INSTANCE_TYPE"
    SM_CURRENT_INSTANCE_TYPE = "SM_CURRENT_INSTANCE_TYPE"
    NEURON_CC_FLAGS = "NEURON_CC_FLAGS"
    NEURON_COMPILE_CACHE_URL = "NEURON_COMPILE_CACHE_URL"
    NEURON_EXTRACT_GRAPHS_ONLY = "NEURON_EXTRACT_GRAPHS_ONLY"
    # Internal: set by the toolkit (or the image) for its own processes
    IMAGE_ROLE = "SMNEURON_IMAGE_ROLE"
    RUNTIME_DIR = "SMNEURON_RUNTIME_DIR"
    TRAINING_WORKER = "SMNEURON_TRAINING_WORKER"
    # Build host (`smneuron build`, `push`, `invoke`)
    BUILDER = "SMNEURON_BUILDER"
    REGISTRY = "SMNEURON_REGISTRY"
    ECR_ENDPOINT_URL = "SMNEURON_ECR_ENDPOINT_URL"
    AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"


# Section key -> heading in docs/configuration.md, in page order.
SECTIONS = {
    "general": "General",
    "serving": "Serving (`serve`)",
    "training": "Training (`train`)",
    "script": "Script mode (`train` running your script)",
    "neuron": "Neuron devices",
    "internal": "Internal (set by the toolkit for its own processes)",
    "build": "Build host (`smneuron build`, `push`, `invoke`)",
}


@dataclass(frozen=True)
class Variable:
    """One environment variable: how to parse it, its default, and what it means.

    Attributes:
        name: the variable's name.
        kind: a parser name from ``smneuron.typed.PARSERS`` (``str``, ``int``, ``bool``…).
        default: the value when the variable is unset or empty.
        meaning: one or two sentences for the documentation.
        section: a key of ``SECTIONS``.
        read_by: which commands read it (``train``, ``serve``, ``compile``, ``all``…).
        example: a value a user might set (empty: set by the platform or the toolkit).
        choices: the allowed values (matched in any case; the declared spelling is returned).
        minimum, maximum: limits of a number.
        shown_default: the default as the docs say it, where ``default`` is None.
    """

    name: str
    kind: str
    default: Any
    meaning: str
    section: str
    read_by: str
    example: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    shown_default: str | None = None

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        """The typed value from ``environ`` (default: ``os.environ``).

        Raises:
            ConfigurationError: the value does not parse, is not one of the choices, or is
                outside the limits; the message names the variable.
        """
        environ = os.environ if environ is None else environ
        raw = environ.get(self.name)
        if raw is None or raw.strip() == "":
            return self.default
        value = PARSERS[self.kind](raw.strip(), self.name)
        if self.choices:
            value = one_of(value, self.choices, self.name, ignore_case=True)
        within(value, self.name, self.minimum, self.maximum)
        return value

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return "`true`" if self.default else "`false`"
        return f"`{self.default}`"


def _variables(*declared: Variable) -> dict[str, Variable]:
    return {variable.name: variable for variable in declared}


VARIABLES: dict[str, Variable] = _variables(
    # ---------------------------------------------------------------------------------- general
    Variable(
        ENV.BASE_DIR, "str", "/opt/ml",
        "Root of the SageMaker tree; every path derives from it (tests and host runs point it "
        "at a temporary directory).",
        "general", "all", "/tmp/opt_ml",
    ),
    Variable(
        ENV.ACCELERATOR, "str", None,
        "Force the backend: `neuron` or `cpu` (`auto` or empty: detect Neuron devices).",
        "general", "all", "cpu", choices=("neuron", "cpu", "auto"), shown_default="detect",
    ),
    Variable(
        ENV.LOG_LEVEL, "str", "INFO",
        "Log level of `train`, `serve` and the MMS workers (an unknown name logs at INFO).",
        "general", "all", "DEBUG",
    ),
    Variable(
        ENV.TRUST_REMOTE_CODE, "bool", False,
        "Run Python code that a checkpoint ships with its config (transformers' "
        "`trust_remote_code`) when `train`, `smneuron compile` and `serve` load a model, "
        "config or tokenizer. Off: such a checkpoint is refused with a message naming this "
        "variable. Turn it on only for checkpoints you trust.",
        "general", "train, compile, serve", "true",
    ),
    # ---------------------------------------------------------------------------------- serving
    Variable(
        ENV.SERVER, "str", "gunicorn",
        "Server stack: `gunicorn` (gunicorn + flask, the faster one measured by `make "
        "bench`) or `mms` (multi-model-server, the engine of AWS's inference toolkits).",
        "serving", "serve", "mms", choices=("mms", "gunicorn"),
    ),
    Variable(
        ENV.LOG_FORMAT, "str", "json",
        "Log line format of `serve`: `json` or `text`.",
        "serving", "serve", "text", choices=("json", "text"),
    ),
    Variable(
        ENV.BIND_TO_PORT, "int", 8080,
        "Port to listen on (SageMaker sets it when the image accepts it).",
        "serving", "serve", "8081", minimum=1,
    ),
    Variable(
        ENV.MAX_PAYLOAD_IN_MB, "int", 6,
        "Largest request and response body in MB (1-100; batch transform sets up to 100). "
        "A larger request is answered 413.",
        "serving", "serve", "20", minimum=1, maximum=100,
    ),
    Variable(
        ENV.MODEL_SERVER_WORKERS, "int", None,
        "Worker processes. Neuron: at most visible NeuronCores ÷ `cores_per_model` (the "
        "default); CPU: one per CPU the container may use by default (CPUs ÷ "
        "`SMNEURON_TORCH_THREADS` when only that is set), at most those CPUs.",
        "serving", "serve", "2", shown_default="derived",
    ),
    Variable(
        ENV.MODEL_SERVER_TIMEOUT, "int", 60,
        "Seconds one request may take.",
        "serving", "serve", "120", minimum=1,
    ),
    Variable(
        ENV.MODEL_SERVER_VMARGS, "str", None,
        "JVM arguments for multi-model-server.",
        "serving", "serve (mms)", "-Xmx1g", shown_default="none",
    ),
    Variable(
        ENV.MAX_CONCURRENT_TRANSFORMS, "int", None,
        "`MaxConcurrentTransforms` answered on /execution-parameters (default: the workers).",
        "serving", "serve", "4", shown_default="derived",
    ),
    Variable(
        ENV.BATCH_STRATEGY, "str", "MULTI_RECORD",
        "`BatchStrategy` answered on /execution-parameters.",
        "serving", "serve", "SINGLE_RECORD", choices=("MULTI_RECORD", "SINGLE_RECORD"),
    ),
    Variable(
        ENV.DEFAULT_ACCEPT, "str", "application/json",
        "Response content type when the request has no Accept header.",
        "serving", "serve", "text/csv",
    ),
    Variable(
        ENV.THREADS_PER_WORKER, "int", None,
        "gunicorn stack: HTTP request threads per worker process (gthread); concurrent "
        "requests of one worker meet in its dynamic batcher. Default: max(8, 2 × the "
        "largest compiled batch size). The MMS stack does not use it. Torch intra-op threads "
        "are `SMNEURON_TORCH_THREADS`.",
        "serving", "serve (gunicorn)", "32", shown_default="derived",
    ),
    Variable(
        ENV.TORCH_THREADS, "int", None,
        "CPU backend: torch intra-op threads per worker (`torch.set_num_threads`, "
        "`OMP_NUM_THREADS`). Default: the CPUs the container may use (cgroup quota and CPU "
        "affinity, not the host's count) ÷ workers, so 1 with the default workers; workers × "
        "threads above those CPUs is refused at start.",
        "serving", "serve (cpu)", "2", minimum=1, shown_default="CPUs ÷ workers",
    ),
    Variable(
        ENV.MAX_BATCH_DELAY_MS, "float", 0.0,
        "How long the dynamic batcher waits after the oldest item to fill a batch, in "
        "milliseconds. 0: a run starts as soon as the batcher is free, with whatever waits "
        "(under load, items gather while the previous run computes).",
        "serving", "serve", "10",
    ),
    Variable(
        ENV.OVERFLOW, "str", "truncate",
        "Input longer than the largest compiled sequence length (audio: longer than the "
        "largest duration bucket): `truncate` it to that length, or `reject` it with 413.",
        "serving", "serve", "reject", choices=("truncate", "reject"),
    ),
    Variable(
        ENV.MAX_INPUTS, "int", 1000,
        "Most inputs (texts, rows, records) one request may hold; more is a 413 naming the limit.",
        "serving", "serve", "64", minimum=1,
    ),
    Variable(
        ENV.MAX_TEXT_CHARS, "int", 32768,
        "Most characters of one text that are tokenized: longer texts are cut by characters "
        "first (`truncate`) or refused with 413 (`reject`), so a huge text never costs seconds "
        "of tokenization.",
        "serving", "serve", "8192", minimum=1,
    ),
    Variable(
        ENV.MAX_IMAGE_PIXELS, "int", 40_000_000,
        "Image artifacts: most pixels (width × height) of one image, read from its header "
        "before any pixel is decoded; a larger image (a decompression bomb) is a 413.",
        "serving", "serve", "10000000", minimum=1,
    ),
    Variable(
        ENV.REQUEST_DEADLINE_S, "float", None,
        "Seconds a request may wait for its batches; past it the answer is a 504 JSON.",
        "serving", "serve", "20", minimum=0.001,
        shown_default="0.9 × `SAGEMAKER_MODEL_SERVER_TIMEOUT`",
    ),
    Variable(
        ENV.MAX_QUEUE, "int", None,
        "Most inputs waiting in one worker's batcher; when full, a 503 JSON with `Retry-After`. "
        "Must be at least `SMNEURON_MAX_INPUTS`.",
        "serving", "serve", "8192", minimum=1, shown_default="max(4096, `SMNEURON_MAX_INPUTS`)",
    ),
    Variable(
        ENV.CSV_HEADER, "str", "auto",
        "Is the first CSV row a header: `auto` (a first row `text` or `inputs` is skipped when "
        "more rows follow), `always`, `never`.",
        "serving", "serve", "never", choices=("auto", "always", "never"),
    ),
    Variable(
        ENV.INSTALL_MODEL_REQUIREMENTS, "bool", False,
        "Install the model's `code/requirements.txt` with pip at start. Off: such a file is "
        "refused with a message (bake the packages into the image instead; endpoints under "
        "network isolation cannot install).",
        "serving", "serve", "true",
    ),
    Variable(
        ENV.JAVA_HOME, "str", None,
        "The Java runtime that runs multi-model-server (`$JAVA_HOME/bin/java`); its `javac`, "
        "if any, compiles our MMS reply decoder on a host. The inference image sets it to "
        "`/opt/smneuron/jre`, a jlink'ed runtime with only the modules MMS uses.",
        "serving", "serve (mms)", "/usr/lib/jvm/java-17-openjdk-amd64",
        shown_default="`java` on `PATH`",
    ),
    Variable(
        ENV.XDG_CACHE_HOME, "str", None,
        "Where a host `serve` keeps our MMS reply decoder compiled (`smneuron/mms-decoder/` "
        "under it); the images bring it compiled.",
        "serving", "serve (mms)", "/var/cache",
        shown_default="`~/.cache`",
    ),
    # --------------------------------------------------------------------------------- training
    Variable(
        ENV.MASTER_PORT, "int", 29500,
        "Rendezvous port on `hosts[0]` for multi-host training (torchrun `--master_port`).",
        "training", "train", "29400", minimum=1,
    ),
    Variable(
        ENV.RANK, "int", 0,
        "Global process rank, set by torchrun; only rank 0 writes the artifact and `success`.",
        "training", "train", shown_default="`0` (set by torchrun)",
    ),
    Variable(
        ENV.WORLD_SIZE, "int", 1,
        "Processes in the job, set by torchrun; above 1, CPU training uses the gloo backend.",
        "training", "train", shown_default="`1` (set by torchrun)",
    ),
    # ----------------------------------------------------------------------------------- script
    Variable(
        ENV.SAGEMAKER_PROGRAM, "str", None,
        "Script mode: the user's script in the source folder (the hyperparameter "
        "`sagemaker_program` also names it); set, `train` runs it instead of the built-in "
        "trainer.",
        "script", "train", "train.py", shown_default="none",
    ),
    Variable(
        ENV.SAGEMAKER_SUBMIT_DIRECTORY, "str", None,
        "Script mode: where the source comes from (an `s3://…/sourcedir.tar.gz`, a folder or "
        "a `.tar.gz`) when the hyperparameter `sagemaker_submit_directory` does not say.",
        "script", "train", "s3://bucket/job/source/sourcedir.tar.gz",
        shown_default="`/opt/ml/code`",
    ),
    Variable(
        ENV.TRAINING_JOB_NAME, "str", None,
        "Script mode: the job name in `SM_TRAINING_ENV` (else the hyperparameter "
        "`sagemaker_job_name`).",
        "script", "train", "my-job-2026-01-01", shown_default="set by SageMaker",
    ),
    Variable(
        ENV.SAGEMAKER_TRAINING_MODULE, "str", None,
        "Script mode: passed on as `SM_FRAMEWORK_MODULE` (the training toolkit's name).",
        "script", "train", shown_default="none (set by a framework image)",
    ),
    Variable(
        ENV.S3_ENDPOINT_URL, "str", None,
        "Script mode: another S3 endpoint for the source download (the training toolkit's "
        "name).",
        "script", "train", "http://127.0.0.1:5000", shown_default="AWS's",
    ),
    Variable(
        ENV.INSTALL_REQUIREMENTS, "bool", True,
        "Script mode: `false` never runs `pip install -r requirements.txt` from the source "
        "folder (network-isolated jobs).",
        "script", "train", "false",
    ),
    Variable(
        ENV.SCRIPT_STOP_GRACE_S, "float", 25.0,
        "Script mode: seconds between the SIGTERM forwarded to the script's process group and "
        "SIGKILL.",
        "script", "train", "10", shown_default="`25`",
    ),
    # ----------------------------------------------------------------------------------- neuron
    Variable(
        ENV.NEURON_VISIBLE_CORES, "str", None,
        "NeuronCores this process may use (e.g. `0-3`); honored when the platform sets it; "
        "`serve` sets one range per worker.",
        "neuron", "all (Neuron)", "0-3", shown_default="all cores",
    ),
    Variable(
        ENV.NEURON_NUM_CORES, "int", None,
        "Number of NeuronCores to use when `NEURON_RT_VISIBLE_CORES` is not set.",
        "neuron", "all (Neuron)", "2", shown_default="all cores",
    ),
    Variable(
        ENV.INSTANCE_TYPE, "str", None,
        "Instance type, to know NeuronCores per device when `neuron-ls` is missing "
        "(overrides `SM_CURRENT_INSTANCE_TYPE`).",
        "neuron", "all (Neuron)", "ml.inf2.xlarge", shown_default="none",
    ),
    Variable(
        ENV.SM_CURRENT_INSTANCE_TYPE, "str", None,
        "The training instance type SageMaker reports.",
        "neuron", "train (Neuron)", shown_default="set by SageMaker",
    ),
    Variable(
        ENV.NEURON_CC_FLAGS, "str", None,
        "neuronx-cc flags for the training graphs. `train` keeps yours and adds what is "
        "missing: `--cache_dir` (the compile cache under /opt/ml/checkpoints), the training "
        "flags, and `--auto-cast=none` with `bf16`. Artifact graphs take the `compiler_args` "
        "hyperparameter instead.",
        "neuron", "train (Neuron)", "-O1", shown_default="set by `train`",
    ),
    Variable(
        ENV.NEURON_COMPILE_CACHE_URL, "str", None,
        "The Neuron compile cache; `train` sets it to `/opt/ml/checkpoints/"
        "neuron-compile-cache` (kept by SageMaker's checkpoint sync) unless it is set.",
        "neuron", "train (Neuron)", "s3://bucket/neuron-cache",
        shown_default="under /opt/ml/checkpoints",
    ),
    Variable(
        ENV.NEURON_EXTRACT_GRAPHS_ONLY, "str", None,
        "Set by `neuron_parallel_compile` during its graph-extraction pass (`precompile` "
        "hyperparameter): the trainer then runs a few steps to extract graphs and publishes "
        "nothing.",
        "neuron", "train (Neuron)", shown_default="set by `neuron_parallel_compile`",
    ),
    # --------------------------------------------------------------------------------- internal
    Variable(
        ENV.IMAGE_ROLE, "str", None,
        "Set by each Dockerfile (`training` or `inference`): what the image runs when started "
        "with no command (SDK 3.x local mode); without it, a hyperparameters.json means "
        "`train`, else `serve`.",
        "internal", "image entrypoint", shown_default="set by the image",
    ),
    Variable(
        ENV.RUNTIME_DIR, "str", None,
        "Where `serve` tells the MMS backend workers it did not start itself to find their "
        "runtime files.",
        "internal", "serve (mms workers)", shown_default="set by `serve`",
    ),
    Variable(
        ENV.TRAINING_WORKER, "str", None,
        "Set to `1` by `train` on the processes it starts under torchrun, so they train "
        "instead of launching again.",
        "internal", "train", shown_default="set by `train`",
    ),
    # ------------------------------------------------------------------------------------ build
    Variable(
        ENV.BUILDER, "str", "legacy",
        "Default of `smneuron build --builder`: `legacy` (the Docker SDK) or `buildkit` "
        "(`DOCKER_BUILDKIT=1 docker build`).",
        "build", "smneuron build", "buildkit", choices=("legacy", "buildkit"),
    ),
    Variable(
        ENV.REGISTRY, "str", None,
        "Default of `smneuron push --registry`: push there instead of the ECR registry host.",
        "build", "smneuron push", "127.0.0.1:5000", shown_default="ECR",
    ),
    Variable(
        ENV.ECR_ENDPOINT_URL, "str", None,
        "Default of `smneuron push --ecr-endpoint-url`: the ECR API endpoint (e.g. a "
        "moto_server for tests).",
        "build", "smneuron push", "http://127.0.0.1:5001", shown_default="AWS",
    ),
    Variable(
        ENV.AWS_DEFAULT_REGION, "str", None,
        "Default region of `smneuron build` (the Neuron base image registry; `us-east-1` "
        "when unset), `push` and `invoke`.",
        "build", "smneuron build, push, invoke", "us-west-2", shown_default="none",
    ),
)  # fmt: skip


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The typed value of the registered variable ``name`` (see ``Variable.read``)."""
    return VARIABLES[name].read(environ)


def accelerator_override(environ: Mapping[str, str] | None = None) -> str | None:
    """The forced backend from ``SMNEURON_ACCELERATOR``, or None to detect."""
    value = read(ENV.ACCELERATOR, environ)
    return None if value in (None, "auto") else value


def remote_code_hint(err: BaseException) -> str:
    """An error of transformers as one line; its refusal to run a checkpoint's own code
    restated with the switch a user of this toolkit has (there is no argument to pass)."""
    text = " ".join(str(err).split())
    if "trust_remote_code" not in text:
        return text
    refusal = text.split(" You can inspect")[0].rstrip(".")
    return (
        f"{refusal}. The checkpoint ships its own Python code, which runs only with "
        f"{ENV.TRUST_REMOTE_CODE}=true; set it only if you trust the checkpoint."
    )


# --------------------------------------------------------------------------------------------
# docs/configuration.md


def markdown_tables() -> str:
    """One table per section of ``VARIABLES``, as docs/configuration.md shows them."""
    parts = []
    for key, heading in SECTIONS.items():
        rows = [v for v in VARIABLES.values() if v.section == key]
        if not rows:
            continue
        lines = [
            f"### {heading}",
            "",
            "| Variable | Read by | Type | Default | Meaning | Example |",
            "|---|---|---|---|---|---|",
        ]
        for v in rows:
            kind = " \\| ".join(f"`{c}`" for c in v.choices) if v.choices else v.kind
            example = f"`{v.example}`" if v.example else ""
            lines.append(
                f"| `{v.name}` | {v.read_by} | {kind} | {v.default_text} | {v.meaning} | "
                f"{example} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
