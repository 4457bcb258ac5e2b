"""LoRA fine-tuning of the generation tasks through peft: wrap, count, merge back.

With ``lora_r > 0`` the pretrained weights stay frozen and only low-rank adapters on the
target modules train (``lora_target_modules``; empty: peft's default for the model type).
Before the artifact is written the adapters are merged into the weights
(``merge_and_unload``), so the artifact is a plain checkpoint that serving and
``smneuron compile`` load unchanged; the settings go into the manifest's ``task_parameters``
under ``lora``.
"""

from __future__ import annotations

import logging
from typing import Any

from smneuron.errors import ConfigurationError
from smneuron.training.hyperparameters import TrainingHyperparameters

log = logging.getLogger(__name__)

PEFT_TASK_TYPES = {"causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def lora_settings(hps: TrainingHyperparameters, target_modules: tuple[str, ...]) -> dict:
    """What the manifest records of a LoRA run (the adapters are merged: ``merged`` true)."""
    return {
        "r": hps.lora_r,
        "alpha": hps.lora_alpha,
        "dropout": hps.lora_dropout,
        "target_modules": list(target_modules),
        "merged": True,
    }


def default_target_modules(model_type: str) -> tuple[str, ...]:
    """peft's LoRA target modules for ``model_type``, or a ConfigurationError saying what to set."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    found = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not found:
        raise ConfigurationError(
            f"lora_target_modules: peft has no default LoRA target modules for model type "
            f"{model_type!r}; name them (e.g. lora_target_modules=q_proj,v_proj: the names of "
            "the model's attention projection layers)"
        )
    return tuple(found)


def matching_modules(model: Any, targets: tuple[str, ...]) -> list[tuple[str, Any]]:
    """The (name, module) pairs peft would wrap: a name equal to a target or ending in
    ``.target``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if any(name == target or name.endswith("." + target) for target in targets)
    ]


def apply_lora(model: Any, hps: TrainingHyperparameters) -> tuple[Any, tuple[str, ...]]:
    """``model`` wrapped in a peft LoRA model (only the adapters trainable) and the target
    modules used.

    Raises:
        ConfigurationError: no default targets for the architecture, or targets that name no
            layer of the model.
    """
    import peft
    from transformers.pytorch_utils import Conv1D

    model_type = str(getattr(model.config, "model_type", "") or "")
    targets = hps.lora_target_modules or default_target_modules(model_type)
    matched = matching_modules(model, targets)
    if not matched:
        raise ConfigurationError(
            f"lora_target_modules: {', '.join(targets)} name no layer of this {model_type} "
            "model; use the last part of a layer name (e.g. c_attn for GPT-2, q,v for T5)"
        )
    # GPT-2's Conv1D stores its weight transposed; peft must be told (it warns otherwise).
    fan_in_fan_out = any(isinstance(module, Conv1D) for _, module in matched)
    config = peft.LoraConfig(
        task_type=PEFT_TASK_TYPES[hps.task],
        r=hps.lora_r,
        lora_alpha=hps.lora_alpha,
        lora_dropout=hps.lora_dropout,
        target_modules=list(targets),
        fan_in_fan_out=fan_in_fan_out,
    )
    try:
        wrapped = peft.get_peft_model(model, config)
    except ValueError as err:  # e.g. a target that is not a layer peft can adapt
        raise ConfigurationError(f"LoRA cannot adapt this model: {err}") from err
    trainable, total = wrapped.get_nb_trainable_parameters()
    log.info(
        "LoRA r=%d alpha=%d dropout=%g on %s: %d trainable parameters of %d (%.2f%%)",
        hps.lora_r,
        hps.lora_alpha,
        hps.lora_dropout,
        ",".join(targets),
        trainable,
        total,
        100.0 * trainable / max(total, 1),
    )
    return wrapped, tuple(targets)


def merged(model: Any) -> Any:
    """The plain transformers model with the LoRA adapters merged into its weights (a model
    without adapters is returned as it is)."""
    merge = getattr(model, "merge_and_unload", None)
    if merge is None:
        return model
    log.info("merging the LoRA adapters into the weights")
    return merge()
