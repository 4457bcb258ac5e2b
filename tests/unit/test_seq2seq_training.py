"""Seq2seq training: ROUGE-L, and a tiny T5 run whose artifact serves what generate does."""

from __future__ import annotations

import json
import logging

import pytest
from tinygen import tiny_seq2seq, tiny_tokenizer

from smneuron.training.seq2seq import rouge_l

pytest.importorskip("datasets")

SENTENCES = [
    "the lighthouse keeper climbs the stairs every evening",
    "fishing boats return to the harbour before the storm",
    "the baker opens the shop at six in the morning",
    "children walk to school along the river",
    "the train to the city leaves from the second platform",
    "in winter the lake freezes and the village skates",
]


def rows(sentences) -> str:
    pairs = [{"source": s, "target": " ".join(s.split()[:3])} for s in sentences]
    return "".join(json.dumps(pair) + "\n" for pair in pairs)


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("a b c d", "a c e") == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert rouge_l("", "a") == 0.0
    assert rouge_l("x y", "a b") == 0.0


def test_training_logs_loss_and_rouge_l_and_serves_generate(opt_ml, tmp_path, caplog):
    import torch
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest
    from smneuron.job import TrainingEnv
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings
    from smneuron.training import hyperparameters, trainer
    from smneuron.training.checkpoints import TerminationFlag

    pretrained = tmp_path / "t5"
    tokenizer = tiny_tokenizer()
    tiny_seq2seq(tokenizer).save_pretrained(pretrained)
    tokenizer.save_pretrained(pretrained)
    opt_ml.model_channel(pretrained)
    opt_ml.channel("train", {"train.jsonl": rows(SENTENCES)})
    opt_ml.channel("validation", {"validation.jsonl": rows(SENTENCES[:2])})
    opt_ml.hyperparameters(
        {
            "task": "seq2seq",
            "epochs": 2,
            "per_device_train_batch_size": 3,
            "logging_steps": 1,
            "learning_rate": 0.01,
            "max_seq_length": 16,
            "batch_size": 2,
            "sequence_lengths": "16",
            "max_total_length": 12,
        }
    )
    env = TrainingEnv.from_env()
    caplog.set_level(logging.INFO, logger="smneuron")
    result = trainer.train(env, hyperparameters.load(env.hyperparameters), TerminationFlag(), "cpu")
    for key in ("train_loss", "eval_loss", "eval_rougeL"):
        assert f" {key}=" in caplog.text, f"no {key} in the metric lines"
    assert 0.0 <= result.metrics["eval_rougeL"] <= 1.0
    manifest = read_manifest(opt_ml.paths.model)
    assert (manifest.task, manifest.sequence_lengths) == ("seq2seq", (16,))
    assert manifest.task_parameters["max_total_length"] == 12

    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(opt_ml.base)})
    handler = Handler.load(opt_ml.paths.model, WorkerInfo(0, None, settings, CpuBackend()))
    try:
        handler.warm_up()
        prompt = "the baker walks to the harbour"
        body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 6}}).encode()
        reply = handler.invoke(body, "application/json", "application/json")
        assert reply.status == 200, reply.body
        model_dir = str(opt_ml.paths.model)
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
        saved = transformers.AutoTokenizer.from_pretrained(model_dir)
        encoded = saved(prompt, return_tensors="pt", return_token_type_ids=False)
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=6, do_sample=False)
        expected = saved.decode(out[0], skip_special_tokens=True)
        assert json.loads(reply.body) == [{"generated_text": expected}]
    finally:
        handler.model.close()
