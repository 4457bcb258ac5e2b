"""Causal-LM training: padding and packing, perplexity in the log lines, and a tiny run on
examples/autocomplete whose artifact generates what Hugging Face generate does."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from tinygen import save_tiny_causal_lm, tiny_tokenizer

from smneuron.training.causal import tokenize_texts, with_perplexity

pytest.importorskip("datasets")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autocomplete" / "data"


def hps(**values):
    from smneuron.training import hyperparameters

    raw = {"task": "causal-lm", "validation_channel": "", **values}
    return hyperparameters.load({key: str(value) for key, value in raw.items()})


def texts(*rows):
    import datasets

    return datasets.Dataset.from_dict({"text": list(rows)})


def test_padding_keeps_one_example_per_text_ended_by_eos_and_cut_at_max_seq_length():
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = tokenizer.sep_token
    rows = tokenize_texts(
        texts("a cat", "one two three four five six seven eight nine ten"),
        tokenizer,
        hps(max_seq_length=8),
    )
    assert rows["input_ids"][0] == tokenizer("a cat", add_special_tokens=False)["input_ids"] + [
        tokenizer.sep_token_id
    ]
    assert len(rows["input_ids"][1]) == 8


def test_packing_cuts_the_joined_texts_into_full_blocks():
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = tokenizer.sep_token
    many = ["one two three", "four five", "six seven eight nine"] * 4
    rows = tokenize_texts(texts(*many), tokenizer, hps(max_seq_length=8, packing="true"))
    assert rows["input_ids"] and all(len(block) == 8 for block in rows["input_ids"])
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in many)
    assert len(rows["input_ids"]) == total // 8


def test_perplexity_is_exp_of_the_loss():
    logs = with_perplexity({"loss": 2.0, "eval_loss": 1.0})
    assert logs["train_perplexity"] == pytest.approx(math.exp(2.0))
    assert logs["eval_perplexity"] == pytest.approx(math.e)
    assert with_perplexity({"eval_loss": 1e6})["eval_perplexity"] == math.inf


def test_training_on_the_example_logs_perplexity_and_serves_hugging_face_generate(
    opt_ml, tmp_path, caplog
):
    import json

    import torch
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest
    from smneuron.job import TrainingEnv
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings
    from smneuron.training import hyperparameters, trainer
    from smneuron.training.checkpoints import TerminationFlag

    opt_ml.model_channel(save_tiny_causal_lm(tmp_path / "pretrained"))
    opt_ml.channel("train", {"train.jsonl": (EXAMPLE / "train.jsonl").read_text()})
    opt_ml.channel("validation", {"validation.jsonl": (EXAMPLE / "validation.jsonl").read_text()})
    opt_ml.hyperparameters(
        {
            "task": "causal-lm",
            "epochs": 2,
            "per_device_train_batch_size": 4,
            "logging_steps": 2,
            "learning_rate": 0.01,
            "max_seq_length": 32,
            "batch_size": 2,
            "sequence_lengths": "16,32",
            "max_total_length": 64,
        }
    )
    env = TrainingEnv.from_env()
    caplog.set_level(logging.INFO, logger="smneuron.training.trainer")
    result = trainer.train(env, hyperparameters.load(env.hyperparameters), TerminationFlag(), "cpu")
    for key in ("train_loss", "train_perplexity", "eval_loss", "eval_perplexity"):
        assert f" {key}=" in caplog.text, f"no {key} in the metric lines"
    assert result.metrics["eval_perplexity"] == pytest.approx(math.exp(result.metrics["eval_loss"]))
    manifest = read_manifest(opt_ml.paths.model)
    assert (manifest.task, manifest.batch_size, manifest.sequence_lengths) == (
        "causal-lm",
        2,
        (16, 32),
    )
    assert manifest.task_parameters["max_total_length"] == 64

    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(opt_ml.base)})
    handler = Handler.load(opt_ml.paths.model, WorkerInfo(0, None, settings, CpuBackend()))
    try:
        handler.warm_up()
        prompt = "The lighthouse keeper"
        body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 8}}).encode()
        reply = handler.invoke(body, "application/json", "application/json")
        assert reply.status == 200, reply.body
        model_dir = str(opt_ml.paths.model)
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8)
        cut = len(tokenizer.decode(ids[0], skip_special_tokens=True))
        expected = prompt + tokenizer.decode(out[0], skip_special_tokens=True)[cut:]
        assert json.loads(reply.body) == [{"generated_text": expected}]
    finally:
        handler.model.close()
