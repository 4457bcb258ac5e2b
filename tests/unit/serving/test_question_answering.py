"""Question answering answers equal the Hugging Face pipeline's: the same tiny checkpoint
served through our handler and run by an in-process ``transformers.pipeline(
"question-answering")`` with the artifact's window length (the largest bucket) and stride,
contexts longer than the largest bucket included; and the 400s that say what is expected."""

from __future__ import annotations

import json

import pytest

from smneuron.serving.handler import Handler, WorkerInfo
from smneuron.serving.settings import ServingSettings
from tinymodels import minilm_dir, tiny_config

BUCKETS = (16, 32, 64)
LONG = (
    "The museum opened in 1889 and was designed by Gustave Eiffel's office. Its collection "
    "holds paintings, sculptures and old maps of the river delta. Visitors arrive by ferry "
    "from the northern harbour, which runs every twenty minutes in summer. The café on the "
    "roof serves lemon cake, and the library keeps letters written by sailors since 1701. "
    "Night tours start at nine o'clock and end at the lighthouse, near the old customs house."
)
CASES = [
    ("Who wrote it?", "Anna Lopez wrote the letter in Madrid."),
    ("Where?", "Ünïcode naïve café, 東京 and emoji 🙂 too"),
    ("When did the museum open and who designed it?", LONG),  # many windows of 64
    ("What does the café serve?", LONG),
    ("  spaces  ", "  leading and   inner spaces  "),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(handler, pipeline factory) for a tiny BERT QA model, buckets 16, 32 and 64."""
    import torch
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("qa")
    model_dir = base / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    config = tiny_config(vocab_size=tokenizer.vocab_size, max_positions=128, initializer_range=0.5)
    torch.manual_seed(5)
    model = transformers.BertForQuestionAnswering(config).eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    manifest = compile_artifact(
        model_dir,
        model,
        task="question-answering",
        labels=(),
        batch_sizes=(1, 4),
        sequence_lengths=BUCKETS,
        backend=CpuBackend(),
        doc_stride=20,
    )
    assert manifest.task_parameters == {"doc_stride": 20}
    assert "token_type_ids" in manifest.input_names
    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(base)})
    handler = Handler.load(model_dir, WorkerInfo(0, None, settings, CpuBackend()))
    pipe = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)

    def eager(question, context, **parameters):
        parameters.setdefault("doc_stride", 20)
        return pipe(question=question, context=context, max_seq_len=BUCKETS[-1], **parameters)

    yield handler, eager, tokenizer
    handler.model.close()


def invoke(handler, payload):
    """(status, body) as a server sends them: an error is its JSON response."""
    from smneuron.errors import SmneuronError
    from smneuron.serving.handler import error_response

    try:
        response = handler.invoke(json.dumps(payload).encode(), "application/json", None)
    except SmneuronError as err:
        response = error_response(err)
    return response.status, json.loads(response.body)


def post(handler, payload):
    status, body = invoke(handler, payload)
    assert status == 200, body
    return body


def assert_same(got, want, path="answer"):
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} vs {want!r}"
        for index, (one, other) in enumerate(zip(got, want, strict=True)):
            assert_same(one, other, f"{path}[{index}]")
        return
    assert isinstance(got, dict), f"{path}: {got!r}"
    assert sorted(got) == ["answer", "end", "score", "start"], path
    assert (got["answer"], got["start"], got["end"]) == (
        want["answer"],
        want["start"],
        want["end"],
    ), f"{path}: {got!r} != {want!r}"
    assert got["score"] == pytest.approx(float(want["score"]), rel=1e-3, abs=1e-5), path


def test_the_long_context_needs_windows(served):
    _, _, tokenizer = served
    tokens = len(tokenizer(CASES[2][0], LONG)["input_ids"])
    assert tokens > BUCKETS[-1] + 30  # several windows of the largest bucket


@pytest.mark.parametrize("question, context", CASES)
def test_a_lone_question_answers_as_the_pipeline(served, question, context):
    handler, eager, _ = served
    got = post(handler, {"inputs": {"question": question, "context": context}})
    want = eager(question, context)
    assert_same(got, want)
    assert got["answer"] == context[got["start"] : got["end"]]


@pytest.mark.parametrize(
    "parameters",
    [
        {"top_k": 3},
        {"top_k": 2, "max_answer_len": 3},
        {"handle_impossible_answer": True},
        {"top_k": 4, "handle_impossible_answer": True},
        {"doc_stride": 8, "top_k": 2},
        {"align_to_words": False, "top_k": 2},
    ],
)
def test_parameters_answer_as_the_pipeline(served, parameters):
    handler, eager, _ = served
    for question, context in CASES[:4]:
        got = post(
            handler,
            {"inputs": {"question": question, "context": context}, "parameters": parameters},
        )
        assert_same(got, eager(question, context, **parameters), f"{question} {parameters}")


def test_the_top_level_form_and_a_batch(served):
    handler, eager, _ = served
    question, context = CASES[0]
    assert_same(post(handler, {"question": question, "context": context}), eager(question, context))
    batch = [{"question": q, "context": c} for q, c in CASES]
    got = post(handler, {"inputs": batch, "parameters": {"top_k": 2}})
    assert len(got) == len(CASES)
    for answer, (q, c) in zip(got, CASES, strict=True):
        assert_same(answer, eager(q, c, top_k=2), q)
    # A list of one question answers as the pipeline does: the answer alone, not a list.
    assert_same(post(handler, {"inputs": batch[:1]}), eager(question, context))
    # A bare list of questions (no "inputs") as the body is a batch too.
    assert_same(post(handler, batch[:2])[1], eager(*CASES[1]))


def test_each_window_is_a_row_through_the_batcher(served):
    handler, _, _ = served
    from smneuron.serving.handler import Context

    context = Context(handler.worker)
    payload = {"inputs": {"question": CASES[2][0], "context": LONG}}
    data = handler.hooks["input_fn"](
        json.dumps(payload).encode(), "application/json", context=context
    )
    handler.hooks["predict_fn"](data, handler.model, context=context)
    assert len(context.batch_sizes) >= 3  # one entry per window row
    assert max(context.graph_batches) <= 4


@pytest.mark.parametrize(
    "payload, words",
    [
        ({"inputs": {"question": "Who?"}}, ['"context" must be a non-empty string']),
        ({"inputs": {"context": "Anna wrote it."}}, ['"question" must be a non-empty string']),
        ({"inputs": {"question": "", "context": "Anna."}}, ["an empty string", '"question"']),
        ({"inputs": {"question": "Who?", "context": "  "}}, ["an empty string", '"context"']),
        ({"inputs": {"question": "Who?", "context": 3}}, ['"context"', "a JSON number"]),
        ({"question": "Who?", "context": "Anna.", "extra": 1}, ["unknown key(s) extra"]),
        (
            {"inputs": [{"question": "Who?", "context": "Anna."}, "text"]},
            ["[1]", '{"question": string, "context": string}'],
        ),
        ({"inputs": "just a text"}, ['takes {"question", "context"} inputs']),
        ({"inputs": {"text": "a", "text_pair": "b"}}, ['takes {"question", "context"} inputs']),
        (
            {"inputs": {"question": "Who?", "context": "Anna."}, "parameters": {"foo": 1}},
            ["unknown parameter(s) foo", "top_k, doc_stride, max_answer_len"],
        ),
        (
            {"inputs": {"question": "Who?", "context": "A."}, "parameters": {"max_seq_len": 9}},
            ["unknown parameter(s) max_seq_len", "largest is 64 tokens"],
        ),
        (
            {"inputs": {"question": "Who?", "context": "A."}, "parameters": {"top_k": 0}},
            ['"top_k" must be an integer ≥ 1'],
        ),
        (
            {"inputs": {"question": "Who?", "context": "A."}, "parameters": {"top_k": "2"}},
            ['"top_k" must be an integer'],
        ),
        (
            {"inputs": {"question": "Who?", "context": "A."}, "parameters": {"doc_stride": 64}},
            ['"doc_stride" (64) must be below the largest bucket (64'],
        ),
        (
            {
                "inputs": {"question": "Who?", "context": "A."},
                "parameters": {"handle_impossible_answer": "yes"},
            },
            ['"handle_impossible_answer" must be true or false'],
        ),
        (
            {
                "inputs": {"question": "Who?", "context": "A."},
                "parameters": {"max_answer_len": 1.5},
            },
            ['"max_answer_len" must be an integer ≥ 1'],
        ),
        (
            {"inputs": {"question": "why " * 70, "context": "Anna."}},
            ["the question has", "largest bucket of 64 tokens"],
        ),
    ],
)
def test_bad_input_is_a_400_that_says_what_is_expected(served, payload, words):
    handler, _, _ = served
    status, body = invoke(handler, payload)
    assert status == 400, body
    message = body["error"]
    for word in words:
        assert word in message, message


def test_answers_are_json_lines_but_not_csv(served):
    handler, _, _ = served
    body = json.dumps({"inputs": [{"question": q, "context": c} for q, c in CASES[:2]]})
    lines = handler.invoke(body.encode(), "application/json", "application/jsonlines")
    assert lines.status == 200
    assert [sorted(json.loads(line)) for line in lines.body.decode().splitlines()] == [
        ["answer", "end", "score", "start"]
    ] * 2
    from smneuron.errors import NotAcceptable

    with pytest.raises(NotAcceptable):
        handler.invoke(body.encode(), "application/json", "text/csv")


def test_predict_fn_takes_what_an_input_fn_returns(served):
    """A user input_fn may hand the default predict_fn a plain {"question", "context"} dict,
    with or without "parameters", or the toolkit's {"inputs": ...} form."""
    from smneuron.serving.handler import Context

    handler, eager, _ = served
    question, context = CASES[0]
    predict = handler.hooks["predict_fn"]
    for data in (
        {"question": question, "context": context},
        {"question": question, "context": context, "parameters": {"top_k": 2}},
        {"inputs": {"question": question, "context": context}, "parameters": {"top_k": 2}},
    ):
        got = predict(data, handler.model, context=Context(handler.worker))
        want = eager(question, context, **data.get("parameters", {}))
        assert_same(got, want, str(data))


def test_json_lines_requests_one_question_per_line(served):
    handler, eager, _ = served
    lines = [json.dumps({"question": q, "context": c}) for q, c in CASES[:2]]
    lines.append(json.dumps({"inputs": {"question": CASES[2][0], "context": CASES[2][1]}}))
    body = ("\n".join(lines) + "\n").encode()
    response = handler.invoke(body, "application/jsonlines", "application/jsonlines")
    assert response.status == 200
    got = [json.loads(line) for line in response.body.decode().splitlines()]
    for answer, (question, context) in zip(got, CASES[:3], strict=True):
        assert_same(answer, eager(question, context))
    mixed = (lines[0] + "\n" + json.dumps("a text") + "\n").encode()
    from smneuron.errors import ClientError

    with pytest.raises(ClientError, match="either texts or"):
        handler.invoke(mixed, "application/jsonlines", None)
    with pytest.raises(ClientError, match='line 1: "context" must be a non-empty string'):
        handler.invoke(b'{"question": "Who?"}\n', "application/jsonlines", None)
