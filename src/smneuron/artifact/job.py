"""``smneuron compile``: turn a fine-tuned checkpoint into a serving artifact for a backend.

Two ways to run it:

- a command: ``smneuron compile --checkpoint DIR --output DIR --backend cpu|neuron
  --batch-size 8 [--batch-sizes 1,2,4,8] --sequence-lengths 32,64,128 [--compiler-args "..."]``;
- a SageMaker job with the training image (``container_entry_point=["smneuron", "compile"]``,
  no arguments): it reads ``hyperparameters.json`` and the ``checkpoint`` channel (a folder,
  or the ``model.tar.gz`` a training job wrote), writes the artifact to ``/opt/ml/model`` and
  ``success`` or ``failure`` under ``/opt/ml/output``.

The artifact holds the checkpoint (config, weights, tokenizer), ``compiled/`` and
``manifest.json`` (written last). torch-neuronx is imported only for ``--backend neuron``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from smneuron import job
from smneuron.artifact.archive import extract
from smneuron.artifact.backends import Backend
from smneuron.artifact.build import DEFAULT_BATCH_SIZES
from smneuron.artifact.generation import is_generation
from smneuron.artifact.manifest import COMPILED_DIR, MANIFEST, MEDIA_TASKS, TASKS, Manifest
from smneuron.artifact.media import DEFAULT_DURATIONS_S
from smneuron.env import ENV, read, remote_code_hint
from smneuron.errors import ArtifactError, ConfigurationError
from smneuron.job import Paths, TrainingEnv
from smneuron.typed import hp, one_of, parse_hyperparameters, parse_int_list

log = logging.getLogger(__name__)

CHECKPOINT_CHANNEL = "checkpoint"
BACKENDS = ("auto", "cpu", "neuron")

# Head class name suffix -> task (the fine-tuned checkpoint's config.architectures).
_ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForNextSentencePrediction", "next-sentence-prediction"),
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForConditionalGeneration", "seq2seq"),
    ("ForImageClassification", "image-classification"),
    ("ForAudioClassification", "audio-classification"),
    ("ForMaskedImageModeling", "masked-image-modeling"),
)
_AUTO_CLASSES = {
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
    "multiple-choice": "AutoModelForMultipleChoice",
    "next-sentence-prediction": "AutoModelForNextSentencePrediction",
    "feature-extraction": "AutoModel",
    "image-classification": "AutoModelForImageClassification",
    "audio-classification": "AutoModelForAudioClassification",
    "masked-image-modeling": "AutoModelForMaskedImageModeling",
}
_LABEL_TASKS = (
    "text-classification",
    "token-classification",
    "image-classification",
    "audio-classification",
)


@dataclass(frozen=True)
class CompileHyperparameters:
    """Hyperparameters of the compile job (SageMaker mode); the flags mirror them."""

    backend: str = hp("auto", "str", "cpu, neuron, or auto (detect)", choices=BACKENDS)
    batch_size: int = hp(
        8, "int", "largest compiled batch size (rows per forward)", minimum=1, maximum=1024
    )
    batch_sizes: tuple[int, ...] = hp(
        DEFAULT_BATCH_SIZES,
        "int_list",
        "the smaller batch sizes also compiled (those above batch_size are dropped): one more "
        "graph per bucket each, so a lone request runs at batch 1",
        minimum=1,
        maximum=1024,
    )
    sequence_lengths: tuple[int, ...] = hp(
        (32, 64, 128), "int_list", "sequence-length buckets", minimum=1, maximum=8192
    )
    compiler_args: str = hp("", "str", "neuronx-cc flags (default: bf16 matmult auto-cast)")
    task: str = hp("", "str", "task; default: from the checkpoint's architecture")
    pooling: str = hp("mean", "str", "feature-extraction pooling", choices=("mean", "cls"))
    max_masks: int = hp(
        1, "int", "fill-mask: mask tokens per input the graph takes", minimum=1, maximum=64
    )
    choices: int = hp(
        0,
        "int",
        "multiple-choice: choices per input the graph takes; 0: config.json's num_choices "
        "(written by `train`)",
        minimum=0,
        maximum=64,
    )
    doc_stride: int = hp(
        128,
        "int",
        "question-answering: tokens two windows of a long context share when served (at most "
        "half the largest bucket)",
        minimum=0,
    )
    cores_per_model: int = hp(
        1,
        "int",
        "NeuronCores per loaded model: 1 (a traced encoder runs on one NeuronCore; serve more "
        "copies with more workers)",
        minimum=1,
    )
    target: str = hp(
        "",
        "str",
        "Neuron target family (inf2, trn1, trn2); default: this host's, else inf2. Needs no "
        "Neuron device: compiles on the CPU backend for the target",
        choices=("", "inf2", "trn1", "trn2"),
    )
    max_total_length: int = hp(
        0,
        "int",
        "causal-lm: prompt + new tokens per sequence (sequence_lengths are the prompt "
        "buckets); 0: twice the largest bucket, capped by the model's positions. seq2seq: "
        "the most new tokens; 0: the largest bucket",
        minimum=0,
    )
    num_cores: int = hp(
        1,
        "int",
        "causal-lm, seq2seq on Neuron: NeuronCores per model (tensor parallelism)",
        minimum=1,
    )
    auto_cast_type: str = hp(
        "bf16",
        "str",
        "causal-lm, seq2seq on Neuron: optimum-neuron cast type (seq2seq: matmuls cast; f32: none)",
        choices=("bf16", "fp16", "f32"),
    )
    audio_durations: tuple[float, ...] = hp(
        DEFAULT_DURATIONS_S,
        "float_list",
        "audio tasks: duration buckets in seconds at the model's sampling rate (sequence "
        "lengths do not apply)",
        minimum=0.01,
        maximum=600.0,
    )


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="fine-tuned Hugging Face checkpoint folder (or model.tar.gz); "
        "without it, run as a SageMaker job (hyperparameters.json + 'checkpoint' channel)",
    )
    parser.add_argument("--output", type=Path, help="artifact folder to write")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="default: auto")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="largest compiled batch size (default: 8)"
    )
    parser.add_argument(
        "--batch-sizes",
        default=None,
        help="smaller batch sizes also compiled, up to --batch-size (default: 1,2,4,8)",
    )
    parser.add_argument(
        "--sequence-lengths", default=None, help="buckets, e.g. 32,64,128 (the default)"
    )
    parser.add_argument(
        "--compiler-args",
        default=None,
        help='neuronx-cc flags, quoted, e.g. "--auto-cast all --auto-cast-type bf16"',
    )
    parser.add_argument("--task", choices=TASKS, default=None, help="default: from config")
    parser.add_argument("--pooling", choices=("mean", "cls"), default=None)
    parser.add_argument(
        "--doc-stride", type=int, default=None, help="question-answering window overlap (128)"
    )
    parser.add_argument("--cores-per-model", type=int, default=None)
    parser.add_argument("--max-masks", type=int, default=None, help="fill-mask (default: 1)")
    parser.add_argument(
        "--choices", type=int, default=None, help="multiple-choice (default: from config.json)"
    )
    parser.add_argument(
        "--audio-durations",
        default=None,
        help="audio tasks: duration buckets in seconds, e.g. 1,2,4 (the default)",
    )
    parser.add_argument(
        "--target",
        choices=("inf2", "trn1", "trn2"),
        default=None,
        help="neuron: the instance family to compile for (no Neuron device needed)",
    )
    parser.add_argument(
        "--max-total-length", type=int, default=None, help="causal-lm, seq2seq only"
    )
    parser.add_argument(
        "--num-cores", type=int, default=None, help="causal-lm, seq2seq on Neuron only"
    )
    parser.add_argument("--auto-cast-type", choices=("bf16", "fp16", "f32"), default=None)


def _from_args(args: argparse.Namespace) -> CompileHyperparameters:
    raw: dict[str, Any] = {}
    for spec in fields(CompileHyperparameters):
        value = getattr(args, spec.name, None)
        if value is not None:
            raw[spec.name] = value
    return parse_hyperparameters(CompileHyperparameters, raw)


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        return run_job(Paths.from_env())
    if args.output is None:
        raise ConfigurationError("--output is required with --checkpoint")
    trust = read(ENV.TRUST_REMOTE_CODE)
    settings = _from_args(args)
    manifest = compile_checkpoint(
        args.checkpoint,
        args.output,
        settings,
        backend=resolve_backend(settings.backend),
        trust_remote_code=trust,
    )
    print(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
    return 0


# --------------------------------------------------------------------------------------------
# SageMaker job mode


def run_job(paths: Paths) -> int:
    """The SageMaker-job form: never raises; writes ``success`` or ``failure``."""

    def work() -> bool:
        env = TrainingEnv.from_env({**os.environ, ENV.BASE_DIR: str(paths.base)})
        settings = parse_hyperparameters(CompileHyperparameters, env.hyperparameters)
        channel = env.channels.get(CHECKPOINT_CHANNEL, paths.channel(CHECKPOINT_CHANNEL))
        if not channel.is_dir():
            raise ConfigurationError(
                f"no '{CHECKPOINT_CHANNEL}' channel at {channel}: give the job an input "
                f"channel named '{CHECKPOINT_CHANNEL}' holding the fine-tuned checkpoint"
            )
        compile_checkpoint(
            channel,
            paths.model,
            settings,
            backend=resolve_backend(settings.backend),
            trust_remote_code=env.trust_remote_code,
        )
        return True

    return job.run_job(paths, "compile", work)


# --------------------------------------------------------------------------------------------
# The work


def resolve_backend(name: str) -> Backend:
    """The backend of one compile run: ``name``, or the host's for ``auto`` (decided once)."""
    from smneuron.accelerator import detect_backend
    from smneuron.artifact.backends import get_backend

    return get_backend(detect_backend() if name == "auto" else name)


def compile_checkpoint(
    checkpoint: Path,
    output: Path,
    settings: CompileHyperparameters,
    *,
    backend: Backend,
    trust_remote_code: bool = False,
) -> Manifest:
    """Compile ``checkpoint`` with ``backend`` into an artifact at ``output``; its manifest.

    ``trust_remote_code`` (``SMNEURON_TRUST_REMOTE_CODE``) lets a checkpoint run its own code.
    """
    from smneuron.accelerator import check_cores_per_model
    from smneuron.artifact.build import compile_artifact, plan_batch_sizes
    from smneuron.neuron.backend import DEFAULT_COMPILER_ARGS, parse_compiler_args

    check_cores_per_model(settings.cores_per_model)
    trust = trust_remote_code
    with tempfile.TemporaryDirectory(prefix="smneuron-checkpoint-") as scratch:
        source = _checkpoint_folder(Path(checkpoint), Path(scratch))
        config = _read_config(source)
        task = settings.task or task_from_config(config)
        one_of(task, TASKS, "task")
        if task in MEDIA_TASKS:
            return _compile_media(source, Path(output), task, config, settings, backend, trust)
        lengths = parse_int_list(settings.sequence_lengths, "sequence_lengths")
        if is_generation(task):  # a decoder: static limits, no traced graphs per bucket
            from smneuron.artifact.generation import compile_generation

            _copy_checkpoint(source, Path(output))
            return compile_generation(
                Path(output),
                Path(output),
                task=task,
                config=config,
                backend=backend,
                batch_size=settings.batch_size,
                prompt_lengths=lengths,
                max_total_length=settings.max_total_length or None,
                num_cores=settings.num_cores,
                auto_cast_type=settings.auto_cast_type,
            )
        limit = config.get("max_position_embeddings")
        if isinstance(limit, int) and max(lengths) > limit:
            raise ConfigurationError(
                f"sequence length {max(lengths)} is above the model's "
                f"max_position_embeddings {limit}; use buckets up to {limit}"
            )
        args = parse_compiler_args(settings.compiler_args)
        if backend.name == "neuron":
            from smneuron.neuron.backend import with_target

            # The target goes into the flags, so the manifest records exactly what compiled.
            args = with_target(args or DEFAULT_COMPILER_ARGS, settings.target or backend.target())
        sizes = plan_batch_sizes(
            settings.batch_size, parse_int_list(settings.batch_sizes, "batch_sizes")
        )
        model = load_model(source, task, trust_remote_code=trust_remote_code)
        _copy_checkpoint(source, Path(output))
        log.info(
            "compiling %s (%s) for %s: batch sizes %s, buckets %s",
            source,
            task,
            backend.name,
            list(sizes),
            list(lengths),
        )
        return compile_artifact(
            Path(output),
            model,
            task=task,
            labels=labels_from_config(config) if task in _LABEL_TASKS else (),
            batch_sizes=sizes,
            sequence_lengths=lengths,
            backend=backend,
            cores_per_model=settings.cores_per_model,
            compiler_args=args,
            pooling=settings.pooling if task == "feature-extraction" else None,
            max_masks=settings.max_masks if task == "fill-mask" else None,
            choices=_choices(settings, config) if task == "multiple-choice" else None,
            doc_stride=settings.doc_stride if task == "question-answering" else None,
        )


def _choices(settings: CompileHyperparameters, config: Mapping[str, Any]) -> int:
    """The number of choices to compile: the setting, else config.json's ``num_choices``."""
    count = settings.choices or config.get("num_choices")
    if not isinstance(count, int) or count < 2:
        raise ConfigurationError(
            "multiple-choice: give the number of choices to compile (--choices N, or the "
            "choices hyperparameter); config.json has no num_choices"
        )
    return count


def _compile_media(
    source: Path,
    output: Path,
    task: str,
    config: Mapping[str, Any],
    settings: CompileHyperparameters,
    backend: Backend,
    trust_remote_code: bool,
) -> Manifest:
    """Image and audio checkpoints: the processor gives the static shapes (``artifact.media``)."""
    from smneuron.artifact.build import plan_batch_sizes
    from smneuron.artifact.media import compile_media_artifact, load_processor
    from smneuron.neuron.backend import DEFAULT_COMPILER_ARGS, parse_compiler_args

    args = parse_compiler_args(settings.compiler_args)
    if backend.name == "neuron":
        from smneuron.neuron.backend import with_target

        args = with_target(args or DEFAULT_COMPILER_ARGS, settings.target or backend.target())
    sizes = plan_batch_sizes(
        settings.batch_size, parse_int_list(settings.batch_sizes, "batch_sizes")
    )
    processor = load_processor(source, task, trust_remote_code=trust_remote_code)
    model = load_model(source, task, trust_remote_code=trust_remote_code)
    _copy_checkpoint(source, output)
    log.info("compiling %s (%s) for %s: batch sizes %s", source, task, backend.name, list(sizes))
    return compile_media_artifact(
        output,
        model,
        processor,
        task=task,
        labels=labels_from_config(config) if task in _LABEL_TASKS else (),
        batch_sizes=sizes,
        backend=backend,
        durations_s=settings.audio_durations,
        cores_per_model=settings.cores_per_model,
        compiler_args=args,
    )


def task_from_config(config: Mapping[str, Any]) -> str:
    """The task of a checkpoint from its head class (``BertForSequenceClassification``...)."""
    for architecture in config.get("architectures") or ():
        for suffix, task in _ARCHITECTURE_TASKS:
            if architecture.endswith(suffix):
                # wav2vec2 / HuBERT / WavLM name their audio classifier *ForSequenceClassification
                audio = task == "text-classification" and "feat_extract_norm" in config
                return "audio-classification" if audio else task
        if architecture.endswith("Model"):
            return "feature-extraction"
    raise ConfigurationError(
        f"cannot tell the task from config.json architectures {config.get('architectures')}; "
        f"pass --task (one of: {', '.join(TASKS)})"
    )


def labels_from_config(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Label names in logit order from ``id2label``."""
    id2label = config.get("id2label") or {}
    try:
        return tuple(str(id2label[key]) for key in sorted(id2label, key=int))
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"config.json id2label is not keyed by integers: {err}") from err


def load_model(folder: Path, task: str, *, trust_remote_code: bool = False) -> Any:
    """The checkpoint's model for ``task``, from local files only; its own code only if trusted."""
    import transformers

    auto = getattr(transformers, _AUTO_CLASSES[task])
    try:
        model = auto.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ConfigurationError(
            f"cannot load a {task} model from {folder}: {remote_code_hint(err)}"
        ) from err
    return model.eval()


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:10]) or "nothing"
        raise ConfigurationError(
            f"{folder} has no config.json, so it is not a Hugging Face checkpoint (found: "
            f"{found}). Point --checkpoint (or the '{CHECKPOINT_CHANNEL}' channel) at the "
            "folder that save_pretrained wrote, or at the training job's model.tar.gz."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigurationError(f"{path} is not valid JSON: {err}") from err


def _checkpoint_folder(path: Path, scratch: Path) -> Path:
    """The folder holding config.json: ``path`` itself, or an unpacked model.tar.gz."""
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        archive = path
    elif path.is_dir() and not (path / "config.json").exists():
        archives = sorted(path.glob("*.tar.gz"))
        if len(archives) != 1:
            return path
        archive = archives[0]
    elif path.is_dir():
        return path
    else:
        raise ConfigurationError(f"checkpoint {path} does not exist")
    target = scratch / "unpacked"
    extract(archive, target)
    log.info("unpacked %s", archive)
    return target


def _copy_checkpoint(source: Path, output: Path) -> None:
    """Copy the checkpoint's files next to the graphs (not an old manifest or graphs)."""
    output.mkdir(parents=True, exist_ok=True)
    if source.resolve() == output.resolve():
        stale = output / MANIFEST
        if stale.exists():
            stale.unlink()  # the artifact is incomplete until the new manifest is written
        return
    for item in source.iterdir():
        if item.name in (MANIFEST, COMPILED_DIR) or item.name.startswith("."):
            continue
        destination = output / item.name
        if item.is_dir():
            shutil.copytree(item, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(item, destination)
    if not (output / "config.json").exists():
        raise ArtifactError(f"copying the checkpoint into {output} failed: no config.json")
