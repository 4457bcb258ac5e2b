"""LoRA (lora_r > 0) for causal-lm and seq2seq: only the adapters train, the merged artifact
generates what the adapted model did, serves unchanged, and records its LoRA settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tinygen import (
    reference_seq2seq,
    reference_text,
    save_tiny_causal_lm,
    tiny_seq2seq,
    tiny_tokenizer,
)

from smneuron.errors import ConfigurationError

pytest.importorskip("datasets")
pytest.importorskip("peft")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autocomplete" / "data"
PAIRS = [
    "the lighthouse keeper climbs the stairs every evening",
    "fishing boats return to the harbour before the storm",
    "the baker opens the shop at six in the morning",
    "children walk to school along the river",
]


def load_hps(**values):
    from smneuron.training import hyperparameters

    return hyperparameters.load({key: str(value) for key, value in values.items()})


class MergeSpy:
    """Wraps ``lora.merged``: just before the merge, notes which weights differ from the
    pretrained ones and what the adapted model generates for ``prompt``."""

    def __init__(self, monkeypatch, initial, reference):
        from smneuron.training import lora

        self.initial = {name: p.detach().clone() for name, p in initial.named_parameters()}
        self.reference = reference
        self.changed_base: list[str] = []
        self.changed_adapters: list[str] = []
        self.generated = None
        original = lora.merged

        def spy(model):
            import torch

            model.eval()
            for name, param in model.get_base_model().named_parameters():
                if "lora_" in name:
                    if "lora_B" in name and torch.count_nonzero(param) > 0:  # B starts at 0
                        self.changed_adapters.append(name)
                    continue
                before = self.initial[name.replace(".base_layer", "")]
                if not torch.equal(param.detach(), before):
                    self.changed_base.append(name)
            self.generated = self.reference(model)
            return original(model)

        monkeypatch.setattr(lora, "merged", spy)


def serve(opt_ml, prompt: str, new_tokens: int) -> list:
    from smneuron.artifact.backends import CpuBackend
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings

    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(opt_ml.base)})
    handler = Handler.load(opt_ml.paths.model, WorkerInfo(0, None, settings, CpuBackend()))
    try:
        handler.warm_up()
        body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": new_tokens}})
        reply = handler.invoke(body.encode(), "application/json", "application/json")
        assert reply.status == 200, reply.body
        return json.loads(reply.body)
    finally:
        handler.model.close()


def test_causal_lora_trains_only_adapters_and_the_merged_artifact_serves_the_same_text(
    opt_ml, tmp_path, monkeypatch, caplog
):
    import transformers

    from smneuron.artifact.manifest import read_manifest
    from smneuron.job import TrainingEnv
    from smneuron.training import trainer
    from smneuron.training.checkpoints import TerminationFlag

    pretrained = save_tiny_causal_lm(tmp_path / "pretrained")
    tokenizer = transformers.AutoTokenizer.from_pretrained(pretrained)
    prompt = "The lighthouse keeper"
    spy = MergeSpy(
        monkeypatch,
        transformers.AutoModelForCausalLM.from_pretrained(pretrained),
        lambda model: reference_text(model, tokenizer, prompt, 8)[1],
    )
    opt_ml.model_channel(pretrained)
    opt_ml.channel("train", {"train.jsonl": (EXAMPLE / "train.jsonl").read_text()})
    opt_ml.hyperparameters(
        {
            "task": "causal-lm",
            "validation_channel": "",
            "epochs": 2,
            "per_device_train_batch_size": 4,
            "learning_rate": 0.05,
            "max_seq_length": 32,
            "batch_size": 2,
            "sequence_lengths": "16,32",
            "max_total_length": 64,
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
        }
    )
    env = TrainingEnv.from_env()
    caplog.set_level(logging.INFO, logger="smneuron")
    trainer.train(env, load_hps(**env.hyperparameters), TerminationFlag(), "cpu")

    assert spy.changed_base == [], "pretrained weights changed under LoRA"
    assert spy.changed_adapters, "no LoRA adapter trained"
    assert "trainable parameters of" in caplog.text
    manifest = read_manifest(opt_ml.paths.model)
    assert manifest.task_parameters["lora"] == {
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "target_modules": ["c_attn"],  # peft's default for GPT-2
        "merged": True,
    }
    files = {path.name for path in opt_ml.paths.model.iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files
    assert serve(opt_ml, prompt, 8) == [{"generated_text": prompt + spy.generated}]


def test_seq2seq_lora_with_named_targets_serves_what_the_adapted_model_generates(
    opt_ml, tmp_path, monkeypatch
):
    import transformers

    from smneuron.artifact.manifest import read_manifest
    from smneuron.job import TrainingEnv
    from smneuron.training import trainer
    from smneuron.training.checkpoints import TerminationFlag

    pretrained = tmp_path / "t5"
    tokenizer = tiny_tokenizer()
    tiny_seq2seq(tokenizer).save_pretrained(pretrained)
    tokenizer.save_pretrained(pretrained)
    prompt = "the baker walks to the harbour"
    spy = MergeSpy(
        monkeypatch,
        transformers.AutoModelForSeq2SeqLM.from_pretrained(pretrained),
        lambda model: reference_seq2seq(model, tokenizer, prompt, 6)[1],
    )
    pairs = [{"source": s, "target": " ".join(s.split()[:3])} for s in PAIRS]
    opt_ml.model_channel(pretrained)
    opt_ml.channel("train", {"train.jsonl": "".join(json.dumps(p) + "\n" for p in pairs)})
    opt_ml.hyperparameters(
        {
            "task": "seq2seq",
            "validation_channel": "",
            "epochs": 2,
            "per_device_train_batch_size": 2,
            "learning_rate": 0.05,
            "max_seq_length": 16,
            "batch_size": 2,
            "sequence_lengths": "16",
            "max_total_length": 12,
            "lora_r": 2,
            "lora_target_modules": "q,k,v,o",
        }
    )
    env = TrainingEnv.from_env()
    trainer.train(env, load_hps(**env.hyperparameters), TerminationFlag(), "cpu")

    assert spy.changed_base == [] and spy.changed_adapters
    lora = read_manifest(opt_ml.paths.model).task_parameters["lora"]
    assert (lora["r"], lora["alpha"], lora["target_modules"]) == (2, 16, ["q", "k", "v", "o"])
    assert serve(opt_ml, prompt, 6) == [{"generated_text": spy.generated}]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"task": "text-classification", "lora_r": 8}, "LoRA is for tasks causal-lm, seq2seq"),
        ({"task": "causal-lm", "lora_target_modules": "c_attn"}, "lora_r is 0"),
        ({"task": "causal-lm", "lora_r": -1}, "lora_r"),
        ({"task": "seq2seq", "lora_r": 4, "lora_dropout": 2}, "lora_dropout"),
    ],
)
def test_bad_lora_hyperparameters_are_configuration_errors(values, message):
    with pytest.raises(ConfigurationError, match=message):
        load_hps(**values)


def test_targets_that_name_no_layer_or_a_model_without_defaults_are_refused(tmp_path):
    import transformers

    from smneuron.training.lora import apply_lora, default_target_modules

    model = transformers.AutoModelForCausalLM.from_pretrained(
        save_tiny_causal_lm(tmp_path / "gpt2")
    )
    hps = load_hps(task="causal-lm", lora_r=4, lora_target_modules="q_proj,v_proj")
    with pytest.raises(ConfigurationError, match="q_proj, v_proj name no layer of this gpt2"):
        apply_lora(model, hps)
    with pytest.raises(ConfigurationError, match="no default LoRA target modules for model"):
        default_target_modules("my-own-architecture")


def test_a_lora_checkpoint_holds_the_adapters_and_training_resumes_from_it(opt_ml, tmp_path):
    from smneuron.job import TrainingEnv
    from smneuron.training import trainer
    from smneuron.training.checkpoints import TerminationFlag, checkpoint_problem

    opt_ml.model_channel(save_tiny_causal_lm(tmp_path / "pretrained"))
    opt_ml.channel("train", {"train.jsonl": (EXAMPLE / "train.jsonl").read_text()})
    values = {
        "task": "causal-lm",
        "validation_channel": "",
        "per_device_train_batch_size": 4,
        "max_seq_length": 16,
        "sequence_lengths": "16",
        "save_steps": 2,
        "lora_r": 2,
    }
    opt_ml.hyperparameters({**values, "max_steps": 2})
    first = trainer.train(
        TrainingEnv.from_env(), load_hps(**values, max_steps=2), TerminationFlag(), "cpu"
    )
    saved = opt_ml.paths.checkpoints / "checkpoint-2"
    assert (saved / "adapter_model.safetensors").is_file()
    assert checkpoint_problem(saved) is None
    second = trainer.train(
        TrainingEnv.from_env(), load_hps(**values, max_steps=4), TerminationFlag(), "cpu"
    )
    assert (first.global_step, second.resumed_from, second.global_step) == (2, saved, 4)
