"""SageMaker SDK local mode end to end per task: question answering and token classification
(NER) train on their examples/ data, deploy and answer with the CPU images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from localjobs import SERVE_ENV, SMALL_ENV
from netutil import free_port

from smneuron.tools.local import sdk as localmode

pytestmark = [pytest.mark.docker, pytest.mark.localmode, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY_JOB = {
    "max_steps": 4,
    "per_device_train_batch_size": 8,
    "logging_steps": 2,
    "save_steps": 2,
    "batch_size": 2,
}
LONG_CONTEXT = (
    "Kenji teaches Portuguese at the evening school. Before that he spent ten years as a "
    "ship's cook on cargo vessels crossing the Atlantic, and he still cooks for his students on "
    "Fridays. The school stands at the end of Harbour Street, next to the old customs house, "
    "and its library keeps letters written by sailors since 1701."
)


def channels(example: str, suffix: str, model: Path, root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {"model": model}
    for name in ("train", "validation"):
        (root / name).mkdir(parents=True)
        shutil.copy(EXAMPLES / example / "data" / f"{name}.{suffix}", root / name)
        found[name] = root / name
    return found


def train_deploy(cpu_images, work: Path, data: dict[str, Path], hyperparameters: dict):
    """(predictor) for a tiny local training job of ``hyperparameters`` on ``data``."""
    uri = localmode.train(
        cpu_images["training"],
        data,
        work / "output",
        hyperparameters={**TINY_JOB, **hyperparameters},
        environment=SMALL_ENV,
        sagemaker_session=localmode.session(container_root=work / "containers"),
    )
    port = free_port("")  # the SDK binds it on every interface
    return localmode.deploy(
        cpu_images["inference"],
        uri,
        port=port,
        environment=SERVE_ENV,
        sagemaker_session=localmode.session(port, work / "serve"),
    )


def test_question_answering_trains_deploys_and_answers(
    offline, cpu_images, docker_tiny_model, tmp_path
):
    data = channels("qa", "jsonl", docker_tiny_model, tmp_path / "channels")
    predictor = train_deploy(
        cpu_images,
        tmp_path,
        data,
        {
            "task": "question-answering",
            "max_seq_length": 64,
            "doc_stride": 16,
            "sequence_lengths": "32,64",
        },
    )
    try:
        question = {"question": "What does Kenji teach?", "context": LONG_CONTEXT}
        answer = predictor.predict({"inputs": question})  # a context above the largest bucket
        assert sorted(answer) == ["answer", "end", "score", "start"]
        assert answer["answer"] == LONG_CONTEXT[answer["start"] : answer["end"]]
        assert 0.0 <= answer["score"] <= 1.0
        batch = predictor.predict(
            {
                "inputs": [question, {"question": "Who?", "context": "Anna lives in Madrid."}],
                "parameters": {"top_k": 2},
            }
        )
        assert [len(answers) for answers in batch] == [2, 2]
    finally:
        localmode.delete(predictor)


def test_token_classification_trains_deploys_and_answers(
    offline, cpu_images, docker_tiny_model, tmp_path
):
    data = channels("ner", "jsonl", docker_tiny_model, tmp_path / "channels")
    predictor = train_deploy(
        cpu_images,
        tmp_path,
        data,
        {"task": "token-classification", "sequence_lengths": "16,32"},
    )
    text = "Anna Lopez moved from Lisbon to Oslo"
    try:
        tokens = predictor.predict({"inputs": text, "parameters": {"ignore_labels": []}})
        assert len(tokens) >= len(text.split())  # every token tagged, none ignored
        for token in tokens:
            assert {"entity", "score", "index", "word", "start", "end"} <= set(token)
            assert text[token["start"] : token["end"]].lower() == token["word"].removeprefix("##")
        groups = predictor.predict(
            {
                "inputs": [text, "Acme hired Sara"],
                "parameters": {"aggregation_strategy": "simple", "ignore_labels": []},
            }
        )
        assert len(groups) == 2
        for entities, sentence in zip(groups, [text, "Acme hired Sara"], strict=True):
            assert entities, sentence
            for entity in entities:
                assert sorted(entity) == ["end", "entity_group", "score", "start", "word"]
                assert 0 <= entity["start"] < entity["end"] <= len(sentence)
    finally:
        localmode.delete(predictor)
