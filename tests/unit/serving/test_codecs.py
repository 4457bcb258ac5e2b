"""Codecs and Accept negotiation."""

import io
import json

import numpy as np
import pytest

from smneuron.errors import ClientError, NotAcceptable, UnsupportedContentType
from smneuron.serving import codecs


@pytest.mark.parametrize(
    ("body", "texts", "parameters"),
    [
        (b'{"inputs": "hello"}', ["hello"], {}),
        (b'{"inputs": ["a", "b"], "parameters": {"top_k": 2}}', ["a", "b"], {"top_k": 2}),
        (b'"bare string"', ["bare string"], {}),
        (b'["x", "y"]', ["x", "y"], {}),
    ],
)
def test_json_forms(body, texts, parameters):
    decoded = codecs.decode(body, "application/json; charset=utf-8")
    assert decoded.texts == texts
    assert decoded.parameters == parameters


@pytest.mark.parametrize(
    "body",
    [b'{"inputs": 3}', b'{"text": "x"}', b"{not json", b'{"inputs": []}', b"\xff\xfe"],
)
def test_malformed_json_is_400_not_415(body):
    with pytest.raises(ClientError) as caught:
        codecs.decode(body, "application/json")
    assert caught.value.status_code == 400
    assert not isinstance(caught.value, UnsupportedContentType)


def test_jsonlines_csv_text():
    lines = b'{"inputs": "one"}\n"two"\n\n'
    assert codecs.decode(lines, "application/jsonlines").texts == ["one", "two"]
    assert codecs.decode(b'text\nfirst,1\n"second, with comma",0\n', "text/csv").texts == [
        "first",
        "second, with comma",
    ]
    assert codecs.decode(b"just text", "text/plain").texts == ["just text"]
    with pytest.raises(ClientError):
        codecs.decode(b"   ", "text/plain")


def test_missing_content_type_means_json():
    assert codecs.decode(b'{"inputs": "x"}', None).texts == ["x"]


def test_unsupported_content_type_lists_supported():
    with pytest.raises(UnsupportedContentType) as caught:
        codecs.decode(b"<a/>", "application/xml")
    assert caught.value.status_code == 415
    for kind in ("application/json", "text/csv", "application/x-npy"):
        assert kind in caught.value.message


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype == object)
    return buffer.getvalue()


def test_npy_strings_and_no_pickle():
    assert codecs.decode(_npy(np.array(["a", "b"])), "application/x-npy").texts == ["a", "b"]
    with pytest.raises(ClientError, match="pickle"):
        codecs.decode(_npy(np.array(["a", 1], dtype=object)), "application/x-npy")
    with pytest.raises(ClientError):
        codecs.decode(_npy(np.zeros(3)), "application/x-npy")
    with pytest.raises(ClientError):
        codecs.decode(b"not npy", "application/x-npy")


def test_encoders():
    result = [{"label": "spam", "score": 0.9}]
    assert json.loads(codecs.encode(result, "application/json")) == result
    assert codecs.encode(result, "application/jsonlines") == b'{"label": "spam", "score": 0.9}\n'
    assert codecs.encode(result, "text/csv") == b"spam,0.9\n"
    embeddings = [[0.5, 0.25], [1.0, 0.0]]
    array = np.load(io.BytesIO(codecs.encode(embeddings, "application/x-npy")))
    assert array.tolist() == embeddings
    with pytest.raises(NotAcceptable):
        codecs.encode(result, "application/x-npy")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/html, text/csv;q=0.5", "text/csv"),
        ("application/json;q=0.2, text/csv;q=0.9", "text/csv"),
        ("text/*", "text/csv"),
        ("application/x-npy, */*;q=0.1", "application/x-npy"),
        ("image/png, */*;q=0.1", "application/json"),
    ],
)
def test_negotiate(header, expected):
    assert codecs.negotiate(header, "application/json") == expected


def test_negotiate_default_is_configurable_and_406_lists_supported():
    assert codecs.negotiate("*/*", "text/csv") == "text/csv"
    assert codecs.negotiate(None, "application/jsonlines") == "application/jsonlines"
    with pytest.raises(NotAcceptable) as caught:
        codecs.negotiate("image/png, text/html;q=0.5", "application/json")
    assert caught.value.status_code == 406
    assert "application/json" in caught.value.message
    with pytest.raises(NotAcceptable):
        codecs.negotiate("text/csv;q=0", "application/json")


def test_jsonlines_splits_on_newline_only():
    body = '"one\u2028still one"\n"two\u0085\u2029still two"\r\n"three"'.encode()
    assert codecs.decode(body, "application/jsonlines").texts == [
        "one\u2028still one",
        "two\u0085\u2029still two",
        "three",
    ]


@pytest.mark.parametrize(
    ("rule", "body", "texts"),
    [
        ("auto", b"text\nhello\n", ["hello"]),
        ("auto", b"Inputs,label\nhello,1\n", ["hello"]),
        ("auto", b"text\n", ["text"]),  # a lone row is data: nothing follows a header
        ("auto", b"hello\ntext\n", ["hello", "text"]),
        ("always", b"message\nhello\n", ["hello"]),
        ("never", b"text\nhello\n", ["text", "hello"]),
    ],
)
def test_csv_header_rule(rule, body, texts):
    options = codecs.DecodeOptions(csv_header=rule)
    assert codecs.decode(body, "text/csv", options).texts == texts


def test_csv_header_rule_is_a_setting():
    from smneuron.errors import ConfigurationError
    from smneuron.serving.settings import ServingSettings

    assert ServingSettings.from_env({}).csv_header == "auto"
    assert ServingSettings.from_env({"SMNEURON_CSV_HEADER": "Never"}).csv_header == "never"
    with pytest.raises(ConfigurationError, match="SMNEURON_CSV_HEADER"):
        ServingSettings.from_env({"SMNEURON_CSV_HEADER": "sometimes"})


def test_csv_output_with_top_k_has_every_label():
    ranked = [
        [{"label": "spam", "score": 0.75}, {"label": "ham", "score": 0.25}],
        [{"label": "ham", "score": 0.5}, {"label": "spam", "score": 0.5}],
    ]
    assert codecs.encode(ranked, "text/csv") == b"spam,0.75,ham,0.25\nham,0.5,spam,0.5\n"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"inputs": ' + b"1" * 5000 + b"}", "4300"),
        (b'"\\ud800"', "surrogate"),
    ],
)
def test_json_that_python_cannot_hold_is_400_with_the_reason(body, reason):
    with pytest.raises(ClientError, match=reason) as caught:
        codecs.decode(body, "application/json")
    assert caught.value.status_code == 400


def _npy_header(shape: str) -> bytes:
    header = f"{{'descr': '<U4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"abcd"


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, inputs=np.array(["a"]))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_npz(), "not an NPY array"),
        (_npy_header("(10000000000,)"), "declares shape"),
        (_npy(np.array([b"\xff"])), "not UTF-8"),
        (_npy(np.array([["a"]])), "0-d or 1-d"),
        (_npy(np.arange(3)), "must hold strings"),
    ],
)
def test_npy_that_would_crash_or_allocate_is_400_with_the_reason(body, reason):
    with pytest.raises(ClientError, match=reason):
        codecs.decode(body, "application/x-npy")


def test_npy_bytes_and_zero_d_strings():
    assert codecs.decode(_npy(np.array([b"caf\xc3\xa9"])), "application/x-npy").texts == ["café"]
    assert codecs.decode(_npy(np.array("one")), "application/x-npy").texts == ["one"]
    assert codecs.decode(_npy(np.array(["a", "b"], dtype=">U1")), "application/x-npy").texts == [
        "a",
        "b",
    ]


def _json(value) -> codecs.Inputs:
    return codecs.decode(json.dumps(value).encode(), "application/json")


def test_a_question_with_choices_is_multiple_choice_and_one_without_is_question_answering():
    mc = {"question": "Where is milk kept cold?", "choices": ["fridge", "oven"]}
    qa = {"question": "When?", "context": "It opened in 1889."}
    lone = _json({"inputs": mc})
    assert (lone.texts, lone.choices, lone.questions) == ([mc["question"]], [mc["choices"]], False)
    listed = _json({"inputs": [mc, mc]})
    assert listed.choices == [mc["choices"]] * 2 and not listed.questions
    asked = _json({"inputs": [qa]})
    assert (asked.texts, asked.pairs, asked.questions, asked.choices) == (
        ["When?"],
        ["It opened in 1889."],
        True,
        None,
    )
    assert _json(qa).questions  # the pipeline's top-level question=, context=
    with pytest.raises(ClientError, match='"inputs" field'):
        _json(mc)  # multiple choice goes in "inputs", as every other task's input
